"""Preprocessed labelled images (`Dataset`), the seeded class-balanced reward split of TRAIN, and batching."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from agmc_onnx.errors import InputError


@dataclass
class Dataset:
    """Preprocessed images `x` (float32, [N,C,H,W] or [N,H,W,C] per `layout`) and int64 labels `y`."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    layout: str = "NCHW"
    source: str = ""

    def __post_init__(self) -> None:
        """Check the invariants every consumer relies on."""
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise InputError(f"dataset images must be float32 [N,C,H,W]/[N,H,W,C], got {self.x.dtype} "
                             f"{list(self.x.shape)}", self.source or None)
        if self.y.shape != (len(self.x),) or self.y.dtype != np.int64:
            raise InputError(f"dataset labels must be int64 [{len(self.x)}], got {self.y.dtype} "
                             f"{list(self.y.shape)}", self.source or None)

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def subset(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        """The examples at `indices` (a copy), same classes and layout."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, x=self.x[idx], y=self.y[idx])


class Split(NamedTuple):
    """`reward` scores search candidates; `rest` is the remaining training data (fine-tuning)."""

    reward: Dataset
    rest: Dataset


def reward_split(train: Dataset, n: int = 5000, seed: int = 0) -> Split:
    """A seeded, class-balanced held-out slice of TRAIN (`reward`) and the rest; indices keep their order."""
    if not 0 < n < len(train):
        raise InputError(f"reward split of {n} asked from {len(train)} training examples", train.source or None)
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(train.y == c)) for c in range(train.num_classes)]
    by_class = [ids for ids in by_class if len(ids)]
    quota = np.zeros(len(by_class), np.int64)
    left = n
    while left:  # fill equal shares; classes that run out pass their share on
        open_ = [i for i, ids in enumerate(by_class) if quota[i] < len(ids)]
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(rng.permutation(open_)):
            take = min(share + (1 if rank < extra else 0), len(by_class[i]) - quota[i])
            quota[i] += take
            left -= take
    picked = np.sort(np.concatenate([ids[:q] for ids, q in zip(by_class, quota, strict=True)]))
    mask = np.ones(len(train), bool)
    mask[picked] = False
    return Split(reward=train.subset(picked), rest=train.subset(np.flatnonzero(mask)))


def batches(ds: Dataset, size: int, *, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) batches: views of `ds` in order, or copies of just each batch when shuffled."""
    if size < 1:
        raise InputError(f"batch size must be positive, got {size}")
    n = len(ds)
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    stop = n - n % size if drop_last else n
    for lo in range(0, stop, size):
        if order is None:
            yield ds.x[lo:lo + size], ds.y[lo:lo + size]
        else:
            idx = np.sort(order[lo:lo + size])
            yield ds.x[idx], ds.y[idx]
