"""The searches (agmc, amc, random) as a run: an ONNX file and data in, pruned model + curve out.

    >>> from agmc_onnx.api import search_prune
    >>> r = search_prune("resnet20.onnx", 0.5, data="fixtures/data", output="r20.pruned.onnx")
    >>> r.search.best_reward, r.report["search"]["curve"][-1]
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agmc_onnx.analysis import analyze
from agmc_onnx.bn import bn_nodes, recalibrated_onnx
from agmc_onnx.data import reward_split
from agmc_onnx.devices import device_default
from agmc_onnx.errors import InputError
from agmc_onnx.evaluate import Evaluator, evaluate_onnx, fidelity_onnx, reference_fidelity
from agmc_onnx.model import load as load_model
from agmc_onnx.rl.search import Episode, SearchResult
from agmc_onnx.rl.workers import ScorerPool, WorkerStats, require_ray
from agmc_onnx.workflows.context import RunContext, SearchData, build_context, low_accuracy_warning
from agmc_onnx.workflows.engine import PruneResult, prune_model

PathLike = str | os.PathLike[str]


def load_search_data(model: Any, data: PathLike | Any, reward_images: int = 2000, seed: int = 0) -> SearchData:
    """The search's data for `model` (a ModelGraph or path): DIR with the run's preprocessing (sidecar and
    metadata included), a run's context, a Dataset (its reward split and rest), or a SearchData as it is."""
    if isinstance(data, SearchData):
        return data
    if isinstance(data, RunContext):
        return data.search_data(reward_images)
    if hasattr(data, "x"):
        split = reward_split(data, min(reward_images, len(data) // 2), seed)
        return SearchData(split.reward, split.rest)
    return build_context(model, data, seed=seed).search_data(reward_images)


@dataclass(frozen=True)
class SearchDefaults:
    """Episode and image counts of a search, scaled to the device when not given."""

    device: str
    episodes: int
    reward_images: int
    calib_images: int
    scaled: bool  # some count was chosen for a CPU

    def note(self) -> str:
        """One line for the output: what runs, and why when scaled down."""
        why = " (no GPU: scaled down for the CPU; --episodes / --reward-images to change)" if self.scaled else ""
        return (f"search on {self.device}: {self.episodes} episodes, up to {self.reward_images} reward images (at "
                f"most half the train split), {self.calib_images} BN calibration images{why}")  # fmt: skip


def search_defaults(device: str | None = None, episodes: int | None = None, reward_images: int | None = None,
                    calib_images: int | None = None) -> SearchDefaults:  # fmt: skip
    """GPU: 300 episodes (AMC/AGMC), 2000 reward and 512 calibration images; CPU: 100, 1000 and 256.

    Measured on 2 busy CPU cores (one scoring thread), scoring one ResNet-56 candidate at 50% MACs
    with BN re-calibration costs ~2.7 s at 1000 + 256 images (~6 s at 2000 + 512).
    """
    import torch

    dev = torch.device(device) if device else device_default()
    gpu = dev.type == "cuda"
    scaled = not gpu and (episodes is None or reward_images is None)
    return SearchDefaults(
        str(dev),
        (300 if gpu else 100) if episodes is None else episodes,
        (2000 if gpu else 1000) if reward_images is None else reward_images,
        (512 if gpu else 256) if calib_images is None else calib_images,
        scaled,
    )


def in_process_workers(evaluator: Evaluator) -> dict[str, Any]:
    """The report's `workers` entry of a search scored in this process (ScorerPool.summary's shape)."""
    stats = WorkerStats(0, socket.gethostname(), os.getpid(), str(evaluator.device), evaluator.calls, evaluator.seconds)
    return {"count": 1, "ray_address": None, "restarts": 0, "per_worker": [stats.to_json()]}


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
    episodes: int | None = None,
    seed: int = 0,
    output: PathLike | None = None,
    report: PathLike | None = None,
    png: PathLike | None = None,
    round_to: int | str = "auto",
    importance: str = "l1",
    checkpoint: PathLike | None = None,
    resume: bool = False,
    policy: PathLike | None = None,
    save_policy: PathLike | None = None,
    bn_recalibrate: bool = True,
    reward_images: int | None = None,
    calib_images: int | None = None,
    agent: str = "ddpg",
    decoder: str = "groups",
    encoder: str = "auto",
    warmup: int | None = None,
    progress: Callable[[Episode], None] | None = None,
    warn: Callable[[str], None] | None = None,
    device: str | None = None,
    threads: int | None = None,
    plan: Any = None,
    options: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    reward: str | None = None,
    output_kinds: dict[str, str] | None = None,
    output_weights: dict[str, float] | None = None,
) -> SearchPruneResult:
    """Plan with `strategy` (searches score on a reward split of `data`), prune, re-calibrate BN, report.

    `reward`: "accuracy" (labels needed) or "fidelity" (the candidate's outputs vs the original's, every graph
    output; `output_kinds` / `output_weights` by output name override the inferred forms and equal weights);
    default accuracy when the data has labels, else fidelity. The report's `accuracy` section needs labels;
    its `fidelity` section is always there.

    The written model is what was scored: with `bn_recalibrate` its BN statistics are re-estimated
    on the same calibration images by the same procedure as the evaluator's (for every strategy,
    uniform and l1-global included). Episode and image counts default by device (`search_defaults`).
    `latency` holds prune_model's latency-budget keywords (target_latency_ms, target_speedup,
    latency_batch, provider, threads, latency_cache, latency_model); `target_flops` may then be None.
    `workers` > 1 (or a `ray_address`) scores candidates on that many Ray workers (agmc_onnx.rl.workers;
    the `ray` extra), `workers` episodes per batch (options["batch_episodes"] to choose another K);
    latency tables are measured before the workers start.
    """
    from dataclasses import replace

    from agmc_onnx.io import check_output_path, write_json, write_model
    from agmc_onnx.report_search import plot_search, search_section
    from agmc_onnx.rl.runner import resolved_encoder
    from agmc_onnx.strategies import SEARCH_STRATEGIES

    parallel = strategy in SEARCH_STRATEGIES and (workers > 1 or ray_address is not None)
    if parallel:
        require_ray(workers)  # before any work: exit 2 naming the extra
    d = search_defaults(device, episodes, reward_images, calib_images)
    ctx = data if isinstance(data, RunContext) else None
    analysis = analyze(ctx.model if ctx is not None else load_model(model))
    if output is not None:
        check_output_path(output, model)
    if ctx is None and isinstance(data, (str, os.PathLike)):
        ctx = build_context(analysis.model, data, seed=seed)
    sd = ctx.search_data(d.reward_images) if ctx is not None else load_search_data(analysis.model, data, d.reward_images, seed)
    labelled = getattr(sd.reward, "y", None) is not None
    reward = reward or ("accuracy" if labelled else "fidelity")
    if reward == "accuracy" and not labelled:
        raise InputError("--reward accuracy needs labelled data; this data has no labels (use --reward fidelity)",
                         getattr(sd.reward, "source", None) or None)  # fmt: skip
    original_reward = evaluate_onnx(analysis.model.proto, sd.reward) if labelled else None
    warning = None if original_reward is None else low_accuracy_warning(
        original_reward, "labelled reward split", ctx.preprocess if ctx else None, ctx.path if ctx else None)
    if reward == "fidelity" and strategy in SEARCH_STRATEGIES:
        flat = reference_fidelity(analysis.model.proto, sd.reward, output_kinds, output_weights).insensitive()
        if flat:
            many = len(flat) > 1
            said = (f"the original's output{'s' if many else ''} {', '.join(flat)} barely change{'' if many else 's'} with the "
                    f"input (spread over the inputs {min(flat.values()):.1e} of the whole): the fidelity reward "
                    "cannot tell plans apart; random weights, or inputs the model does not respond to?")
            warning = f"{warning}; {said}" if warning else said
    if warning and warn is not None:
        warn(warning)
    searching = strategy in SEARCH_STRATEGIES
    evaluator: Any = None
    if parallel:  # each worker builds the same Evaluator on its own device (one CPU thread each)
        factory = partial(Evaluator, analysis, sd.reward, sd.calibration, bn_recalibrate=bn_recalibrate,
                          calib_images=d.calib_images, reward_kind=reward, output_kinds=output_kinds,
                          output_weights=output_weights)  # fmt: skip
        evaluator = ScorerPool(factory, workers, ray_address, device)
        calib, batch = tuple(a[: d.calib_images] for a in sd.calibration.inputs), 256
    elif searching:
        evaluator = Evaluator(analysis, sd.reward, sd.calibration, bn_recalibrate=bn_recalibrate,
                              calib_images=d.calib_images, device=d.device, threads=threads, reward_kind=reward,
                              output_kinds=output_kinds, output_weights=output_weights)  # fmt: skip
        calib, batch = evaluator.calib_inputs, evaluator.batch_size
    else:
        calib, batch = tuple(a[: d.calib_images] for a in sd.calibration.inputs), 256
    holder: dict[str, SearchResult] = {}
    if checkpoint is None and output is not None:
        checkpoint = Path(str(output) + ".search")
    opts: dict[str, Any] = dict(options or {})
    opts.update({
        "episodes": d.episodes, "agent": agent, "decoder": decoder, "encoder": encoder, "checkpoint": checkpoint, "resume": resume, "policy": policy,
        "save_policy": save_policy, "progress": progress, "on_result": lambda r: holder.setdefault("r", r),
    })  # fmt: skip
    if warmup is not None:
        opts["warmup"] = warmup
    with evaluator if parallel else nullcontext():  # the workers stop when the plan is cut
        result = prune_model(model, target_flops, strategy, plan=plan, round_to=round_to, importance=importance,
                             seed=seed, evaluator=evaluator, options=opts, analysis=analysis,
                             **(latency or {}))  # fmt: skip
    proto = result.proto
    bn_written = bool(bn_recalibrate and bn_nodes(proto))
    if bn_written:  # the same images, batches and procedure as the evaluator's re-calibration
        proto = recalibrated_onnx(proto, calib, batch, d.device)
    if ctx is not None:
        ctx.describe(proto)
    out_path = write_model(proto, output, model) if output is not None else None
    if out_path is not None and ctx is not None:
        ctx.write_sidecar(out_path)
    result = replace(result, proto=proto, output=out_path)
    rep = result.report
    if warning:
        rep["warnings"] = [*rep.get("warnings", []), warning]
    rep["output"] = str(output) if output is not None else None
    n_calib = len(calib[0]) if isinstance(calib, tuple) else len(calib)
    rep["bn_recalibration"] = {"written": bn_written, "calibration_images": n_calib, "batch": batch}
    search = holder.get("r")
    rep["reward"] = reward
    test_labelled = sd.test is not None and getattr(sd.test, "y", None) is not None
    rep["accuracy"] = None if not labelled else {
        "reward_split": {"original": original_reward,
                         "pruned": evaluate_onnx(proto, sd.reward), "images": len(sd.reward)},
        "test": None if not test_labelled else {"original": evaluate_onnx(analysis.model.proto, sd.test),
                                                "pruned": evaluate_onnx(proto, sd.test), "images": len(sd.test)},
    }  # fmt: skip
    rep["fidelity"] = {split: None if ds is None else {
        "pruned": fidelity_onnx(proto, ds, reference_fidelity(analysis.model.proto, ds, output_kinds, output_weights)),
        "images": len(ds)} for split, ds in (("reward_split", sd.reward), ("test", sd.test))}  # fmt: skip
    written_png = None
    if search is not None and evaluator is not None:
        facts = {"bn_recalibrated": evaluator.bn_recalibrated, "reward_images": len(sd.reward),
                 "calibration_images": len(calib), "evaluator_mode": evaluator.mode, "seed": seed,
                 "device": d.device, "threads": evaluator.threads, "defaults_note": d.note(),
                 "scoring_seconds": evaluator.seconds, "scored_candidates": evaluator.calls,
                 "reward": reward, "agent": agent if strategy != "random" else None,
                 "outputs": evaluator.outputs if parallel else evaluator.fidelity and evaluator.fidelity.describe(),
                 "decoder": decoder if strategy == "agmc" else None,
                 "encoder": resolved_encoder(opts) if strategy == "agmc" else None,
                 "workers": evaluator.summary() if parallel else in_process_workers(evaluator)}  # fmt: skip
        rep["search"] = search_section(search, strategy, **facts)
        png_path = png if png is not None else Path(report).with_suffix(".png") if report is not None else None
        if png_path is not None:
            written_png = plot_search(search, png_path, f"{Path(str(model)).name}: {strategy}",
                                      f"reward-split {reward}")
            rep["search"]["png"] = str(written_png)
    if report is not None:
        write_json(rep, report, model)
    return SearchPruneResult(result, search, rep, written_png)
