"""Model inputs with or without labels (`Dataset`), the seeded (class-balanced when labelled) reward split of
TRAIN, and batching."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from agmc_onnx.errors import InputError


@dataclass
class Dataset:
    """The model's first input `x` (preprocessed images: float32 [N,C,H,W] or [N,H,W,C] per `layout`, or an
    input tensor as given), int64 labels `y` (None: unlabelled) and the model's further inputs `extra`."""

    x: np.ndarray
    y: np.ndarray | None
    classes: list[str]
    layout: str = "NCHW"
    source: str = ""
    extra: tuple[np.ndarray, ...] = ()  # the model's other inputs, in graph order, [N,...] each

    def __post_init__(self) -> None:
        """Check the invariants every consumer relies on."""
        if self.x.ndim < 2 or self.x.dtype != np.float32:
            raise InputError(f"the model's first input must be float32 [N,...] (images [N,C,H,W]/[N,H,W,C]), got "
                             f"{self.x.dtype} {list(self.x.shape)}", self.source or None)
        if self.y is not None and (self.y.shape != (len(self.x),) or self.y.dtype != np.int64):
            raise InputError(f"dataset labels must be int64 [{len(self.x)}], got {self.y.dtype} "
                             f"{list(self.y.shape)}", self.source or None)
        if any(len(a) != len(self.x) for a in self.extra):
            raise InputError(f"every model input needs {len(self.x)} examples, got {[len(a) for a in self.extra]}",
                             self.source or None)

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.x)

    @property
    def labelled(self) -> bool:
        """Whether the examples have labels."""
        return self.y is not None

    @property
    def inputs(self) -> tuple[np.ndarray, ...]:
        """Every model input's array, in graph order."""
        return (self.x, *self.extra)

    def without_labels(self) -> Dataset:
        """The same inputs, labels withheld."""
        return replace(self, y=None)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def subset(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        """The examples at `indices` (a copy), same classes and layout."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, x=self.x[idx], y=None if self.y is None else self.y[idx],
                       extra=tuple(a[idx] for a in self.extra))


class Split(NamedTuple):
    """`reward` scores search candidates; `rest` is the remaining training data (fine-tuning)."""

    reward: Dataset
    rest: Dataset


def reward_split(train: Dataset, n: int = 5000, seed: int = 0) -> Split:
    """A seeded held-out slice of TRAIN (`reward`; class-balanced when labelled) and the rest; indices keep
    their order."""
    if not 0 < n < len(train):
        raise InputError(f"reward split of {n} asked from {len(train)} training examples", train.source or None)
    rng = np.random.default_rng(seed)
    if train.y is None:
        picked = np.sort(rng.permutation(len(train))[:n])
        mask = np.ones(len(train), bool)
        mask[picked] = False
        return Split(reward=train.subset(picked), rest=train.subset(np.flatnonzero(mask)))
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
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(x, y) batches (y None when unlabelled): views of `ds` in order, or copies of just each batch when shuffled."""
    if size < 1:
        raise InputError(f"batch size must be positive, got {size}")
    n = len(ds)
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    stop = n - n % size if drop_last else n
    for lo in range(0, stop, size):
        if order is None:
            yield ds.x[lo:lo + size], None if ds.y is None else ds.y[lo:lo + size]
        else:
            idx = np.sort(order[lo:lo + size])
            yield ds.x[idx], None if ds.y is None else ds.y[idx]
