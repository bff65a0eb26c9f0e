"""Python API for the searches (agmc, amc, random): an ONNX file and data in, pruned model + curve out.

    >>> from agmc_onnx.search import search_prune
    >>> r = search_prune("resnet20.onnx", 0.5, data="fixtures/data", episodes=300, output="r20.pruned.onnx")
    >>> r.search.best_reward, r.report["search"]["curve"][-1]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agmc_onnx.api import PruneResult, analyze, prune_model
from agmc_onnx.errors import InputError
from agmc_onnx.evaluate import Evaluator, evaluate_onnx
from agmc_onnx.rl.search import Episode, SearchResult

PathLike = str | os.PathLike[str]


@dataclass
class SearchData:
    """The three data roles: reward split (scores), calibration images (BN), test split (final report)."""

    reward: Any
    calibration: Any
    test: Any | None = None


def load_search_data(model: Any, data: PathLike | Any, reward_images: int = 2000, seed: int = 0) -> SearchData:
    """Load DIR (train + test when present) for `model`, and cut the reward split out of train."""
    from agmc_onnx.data import Preprocess, load_dataset, reward_split

    if isinstance(data, SearchData):
        return data
    if hasattr(data, "x") and hasattr(data, "y"):
        split = reward_split(data, min(reward_images, len(data) // 2), seed)
        return SearchData(split.reward, split.rest)
    pre = Preprocess.for_model(model.proto)
    train = load_dataset(data, "train", pre)
    split = reward_split(train, min(reward_images, len(train) // 2), seed)
    try:
        test = load_dataset(data, "test", pre)
    except InputError:
        test = None
    return SearchData(split.reward, split.rest, test)


@dataclass
class SearchPruneResult:
    """What search_prune returns: the engine's PruneResult and the search's curve."""

    prune: PruneResult
    search: SearchResult | None
    report: dict[str, Any]
    png: Path | None


def search_prune(
    model: PathLike,
    target_flops: float | None,
    strategy: str = "agmc",
    *,
    data: PathLike | Any,
    episodes: int = 300,
    seed: int = 0,
    output: PathLike | None = None,
    report: PathLike | None = None,
    round_to: int | str = "auto",
    importance: str = "l1",
    checkpoint: PathLike | None = None,
    resume: bool = False,
    policy: PathLike | None = None,
    save_policy: PathLike | None = None,
    bn_recalibrate: bool = True,
    reward_images: int = 2000,
    agent: str = "ddpg",
    warmup: int | None = None,
    progress: Callable[[Episode], None] | None = None,
    device: str | None = None,
    threads: int | None = None,
    latency: dict[str, Any] | None = None,
) -> SearchPruneResult:
    """Search a plan with `strategy` scored on a reward split of `data`, prune, report (+ PNG beside it).

    `latency` holds prune_model's latency-budget keywords (target_latency_ms, target_speedup,
    latency_batch, provider, threads, latency_cache, latency_model); `target_flops` may then be None.
    """
    from agmc_onnx.io import write_json
    from agmc_onnx.report_search import plot_search, search_section

    analysis = analyze(model)
    sd = load_search_data(analysis.model, data, reward_images, seed)
    evaluator = Evaluator(analysis, sd.reward, sd.calibration, bn_recalibrate=bn_recalibrate, device=device,
                          threads=threads)
    holder: dict[str, SearchResult] = {}
    if checkpoint is None and output is not None:
        checkpoint = Path(str(output) + ".search")
    options: dict[str, Any] = {
        "episodes": episodes, "agent": agent, "checkpoint": checkpoint, "resume": resume, "policy": policy,
        "save_policy": save_policy, "progress": progress, "on_result": lambda r: holder.setdefault("r", r),
    }  # fmt: skip
    if warmup is not None:
        options["warmup"] = warmup
    result = prune_model(model, target_flops, strategy, round_to=round_to, importance=importance, output=output,
                         seed=seed, evaluator=evaluator, options=options, analysis=analysis,
                         **(latency or {}))  # fmt: skip
    rep = result.report
    search = holder.get("r")
    facts = {"bn_recalibrated": evaluator.bn_recalibrated, "reward_images": len(sd.reward),
             "calibration_images": len(evaluator.calib), "evaluator_mode": evaluator.mode, "seed": seed,
             "scoring_seconds": evaluator.seconds, "scored_candidates": evaluator.calls}  # fmt: skip
    rep["accuracy"] = {
        "reward_split": {"original": evaluate_onnx(analysis.model.proto, sd.reward),
                         "pruned": evaluate_onnx(result.proto, sd.reward)},
        "test": None if sd.test is None else {"original": evaluate_onnx(analysis.model.proto, sd.test),
                                              "pruned": evaluate_onnx(result.proto, sd.test)},
    }  # fmt: skip
    png = None
    if search is not None:
        rep["search"] = search_section(search, strategy, **facts)
        if report is not None:
            png = plot_search(search, Path(report).with_suffix(".png"), f"{Path(str(model)).name}: {strategy}")
            rep["search"]["png"] = str(png)
    if report is not None:
        write_json(rep, report, model)
    return SearchPruneResult(result, search, rep, png)


class ProgressBar:
    """A live rich progress bar for the search: episode, reward, best reward, MACs ratio."""

    def __init__(self, episodes: int, label: str = "search") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)  # fmt: skip
        self.task = self.progress.add_task(label, total=max(1, episodes), info="")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, e: Episode) -> None:
        """Advance to episode e."""
        info = f"reward {e.reward:.4f}  best {e.best:.4f}  MACs {e.macs_ratio:.3f}  {e.seconds:.2f}s/ep"
        self.progress.update(self.task, completed=e.episode + 1, info=info)
