"""What a run decides once and passes down: the model, its preprocessing, the data splits, device and seed.

Preprocessing is resolved here, once per run (flags > sidecar > the model file's metadata > the
model's input shape), and every stage that reads data (reward split, BN calibration, fine-tuning,
the final evaluation) takes it from here: no stage builds its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agmc_onnx.data import Dataset, Preprocess, load_dataset, reward_split
from agmc_onnx.errors import InputError
from agmc_onnx.model import ModelGraph
from agmc_onnx.model import load as load_model

PathLike = str | os.PathLike[str]


@dataclass
class SearchData:
    """The three data roles of a search: reward split (scores), calibration images (BN), test split (report)."""

    reward: Any
    calibration: Any
    test: Any | None = None


@dataclass
class RunContext:
    """One run's model, preprocessing and data, built once (build_context) and passed to every stage."""

    path: Path
    model: ModelGraph
    preprocess: Preprocess | None = None  # None: the run reads no data
    train: Dataset | None = None
    test: Dataset | None = None
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    _splits: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    def search_data(self, reward_images: int) -> SearchData:
        """A seeded class-balanced reward split of TRAIN, the rest as BN calibration images, and TEST."""
        if self.train is None:
            raise InputError("this run scores candidates on data: give --data DIR", self.path)
        key = ("search", reward_images)
        if key not in self._splits:
            split = reward_split(self.train, min(reward_images, len(self.train) // 2), self.seed)
            self._splits[key] = SearchData(split.reward, split.rest, self.test)
        return self._splits[key]

    def finetune_data(self, held_out: int | None = None) -> tuple[Dataset, Dataset]:
        """(training examples, held-out slice of TRAIN that picks the best epoch: a fifth, at most 5000)."""
        if self.train is None:
            raise InputError("fine-tuning trains on data: give --data DIR", self.path)
        n = held_out if held_out is not None else min(5000, max(1, len(self.train) // 5))
        key = ("finetune", n)
        if key not in self._splits:
            split = reward_split(self.train, n, self.seed)
            self._splits[key] = (split.rest, split.reward)
        return self._splits[key]


def resolve_preprocess(model: ModelGraph | PathLike, sidecar: PathLike | None = None,
                       **flags: Any) -> Preprocess:  # fmt: skip
    """The run's preprocessing: flags > sidecar (given, or beside the model) > the file's metadata > its input shape."""
    return Preprocess.for_model(model, sidecar, **flags)


def build_context(
    model: PathLike | ModelGraph,
    data: PathLike | None = None,
    *,
    need_test: bool = False,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    preprocess: Preprocess | None = None,
    sidecar: PathLike | None = None,
    flags: dict[str, Any] | None = None,
) -> RunContext:
    """Load the model (once) and, with `data`, resolve the preprocessing and load train (+ test) with it."""
    graph = model if isinstance(model, ModelGraph) else load_model(model)
    path = Path(graph.path) if graph.path else Path(str(model)) if not isinstance(model, ModelGraph) else Path("model")
    ctx = RunContext(path=path, model=graph, seed=seed, device=device, threads=threads)
    if data is None:
        return ctx
    ctx.preprocess = preprocess or resolve_preprocess(graph, sidecar, **(flags or {}))
    ctx.train = load_dataset(data, "train", ctx.preprocess)
    try:
        ctx.test = load_dataset(data, "test", ctx.preprocess)
    except InputError:
        if need_test:
            raise
        ctx.test = None
    return ctx
