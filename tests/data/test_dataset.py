"""agmc_onnx.data.dataset: the reward split, batching and the Dataset invariants."""

from __future__ import annotations

import numpy as np
import pytest

from agmc_onnx.data import Dataset, batches, reward_split
from agmc_onnx.errors import InputError


def make_ds(y: np.ndarray) -> Dataset:
    """A dataset whose image i holds the value i."""
    x = np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    return Dataset(x=x, y=y.astype(np.int64), classes=[str(i) for i in range(int(y.max()) + 1)])


def test_reward_split_balanced_deterministic() -> None:
    ds = make_ds(np.repeat(np.arange(10), 100))
    a, b = reward_split(ds, 500, seed=3), reward_split(ds, 500, seed=3)
    np.testing.assert_array_equal(a.reward.x, b.reward.x)
    assert np.bincount(a.reward.y).tolist() == [50] * 10
    ids_r, ids_s = a.reward.x[:, 0, 0, 0].astype(int), a.rest.x[:, 0, 0, 0].astype(int)
    assert len(set(ids_r) | set(ids_s)) == 1000 and not set(ids_r) & set(ids_s)
    assert np.all(np.diff(ids_r) > 0)  # original order kept
    c = reward_split(ds, 500, seed=4)
    assert not np.array_equal(a.reward.x, c.reward.x)


def test_reward_split_uneven_classes() -> None:
    ds = make_ds(np.array([0] * 3 + [1] * 50 + [2] * 50))
    s = reward_split(ds, 33)
    assert np.bincount(s.reward.y).tolist() == [3, 15, 15]
    with pytest.raises(InputError, match="reward split of 200"):
        reward_split(ds, 200)


def test_batches_views_and_shuffle() -> None:
    ds = make_ds(np.arange(10) % 2)
    got = list(batches(ds, 4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert all(np.shares_memory(x, ds.x) for x, _ in got)
    assert [len(y) for _, y in batches(ds, 4, drop_last=True)] == [4, 4]
    seen = np.concatenate([x[:, 0, 0, 0] for x, _ in batches(ds, 3, shuffle=True, seed=1)])
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(InputError):
        next(batches(ds, 0))


def test_dataset_invariants() -> None:
    with pytest.raises(InputError, match="float32"):
        Dataset(x=np.zeros((2, 1, 2, 2)), y=np.zeros(2, np.int64), classes=["a"])
    with pytest.raises(InputError, match="int64"):
        Dataset(x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(3, np.int64), classes=["a"])
