"""The `prune` command's whole job: plan (a rule or a search on data), cut, re-calibrate BN, fine-tune,
measure, report and gate. Everything is computed in memory and written at the end, so a run that fails
leaves no output behind; the written file is then read back and checked against the report."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.analysis import analyze
from agmc_onnx.errors import InputError
from agmc_onnx.report import Gates
from agmc_onnx.strategies import SEARCH_STRATEGIES
from agmc_onnx.workflows.audit import default_output
from agmc_onnx.workflows.context import RunContext, build_context, self_check
from agmc_onnx.workflows.engine import PruneResult, prune_model

PathLike = str | os.PathLike[str]


@dataclass
class PruneOptions:
    """Every choice of a `prune` run (the CLI's flags, typed)."""

    target_flops: float | None = None
    strategy: str | None = None  # None: agmc with data and no plan, else uniform (plan with a plan file)
    plan: PathLike | None = None
    output: PathLike | None = None  # None: MODEL.pruned.onnx
    report: PathLike | None = None  # None: OUTPUT.report.json
    round_to: int | str = "auto"
    importance: str = "l1"
    seed: int = 0
    data: PathLike | None = None
    episodes: int | None = None
    reward_images: int | None = None
    agent: str = "ddpg"
    decoder: str = "groups"
    policy: PathLike | None = None
    save_policy: PathLike | None = None
    checkpoint: PathLike | None = None
    resume: bool = False
    bn_recalibrate: bool = True
    finetune_epochs: int = 0
    distill: bool = False
    bench: bool = True
    bench_batches: tuple[int, ...] = (1,)
    bench_repeats: int = 30
    provider: str = "cpu"
    threads: int | None = None
    target_latency_ms: float | None = None
    target_speedup: float | None = None
    latency_batch: int = 1
    latency_cache: PathLike | None = None
    latency_rounds: int = 2
    gates: Gates = field(default_factory=Gates)
    command: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # --scale/--mean/--std/--layout/--resize (None: unset)
    sidecar: PathLike | None = None  # a preprocessing sidecar other than the one beside the model
    input_shapes: dict[str, tuple[int, ...]] | None = None  # --input-shape: the size a dynamic file is analysed at

    def chosen_strategy(self) -> str:
        """The strategy the run uses."""
        if self.strategy is None:
            return "agmc" if self.data is not None and self.plan is None else ("plan" if self.plan else "uniform")
        return "plan" if self.plan is not None and self.strategy == "uniform" else self.strategy

    def latency(self) -> dict[str, Any]:
        """prune_model's latency keywords; empty without a latency budget."""
        if self.target_latency_ms is None and self.target_speedup is None:
            return {}
        return {"target_latency_ms": self.target_latency_ms, "target_speedup": self.target_speedup,
                "latency_batch": self.latency_batch, "latency_cache": self.latency_cache,
                "provider": self.provider, "threads": self.threads, "latency_rounds": self.latency_rounds}  # fmt: skip


@dataclass
class PruneRun:
    """What a `prune` run did: the merged report, the engine's result and where files went."""

    report: dict[str, Any]
    result: PruneResult
    strategy: str
    output: Path
    report_paths: list[str]
    notes: list[str]


def _plan_and_cut(model: PathLike, opts: PruneOptions, ctx: RunContext, strategy: str,
                  progress: Callable[..., None] | None, warn: Callable[[str], None] | None,
                  report_path: Path) -> tuple[PruneResult, dict[str, Any]]:  # fmt: skip
    """The engine's result and the report so far: a search (or a rule scored on data) with data, else a rule."""
    if ctx.train is None:
        if strategy in SEARCH_STRATEGIES:
            raise InputError(f"--strategy {strategy} scores candidates on data: give --data DIR", model)
        result = prune_model(model, opts.target_flops, strategy, plan=opts.plan, round_to=opts.round_to,
                             importance=opts.importance, seed=opts.seed, analysis=analyze(ctx.model),
                             **opts.latency())  # fmt: skip
        return result, result.report
    from agmc_onnx.workflows.search import search_prune

    out = Path(opts.output or default_output(model))
    searched = search_prune(
        model, opts.target_flops, strategy, data=ctx, episodes=opts.episodes, seed=opts.seed,
        report=None, png=report_path.with_suffix(".png"), round_to=opts.round_to,
        importance=opts.importance, checkpoint=opts.checkpoint or Path(str(out) + ".search"), resume=opts.resume,
        policy=opts.policy, save_policy=opts.save_policy, bn_recalibrate=opts.bn_recalibrate,
        reward_images=opts.reward_images, agent=opts.agent, decoder=opts.decoder, progress=progress,
        latency=opts.latency(), plan=opts.plan, threads=ctx.threads, warn=warn,
    )  # fmt: skip
    return searched.prune, searched.report


def _finetune(ctx: RunContext, proto: onnx.ModelProto, opts: PruneOptions, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the pruned model on the run's training data (distilling from the original with `distill`)."""
    from agmc_onnx.finetune import FinetuneConfig, finetune

    train, held = ctx.finetune_data()
    cfg = FinetuneConfig(epochs=opts.finetune_epochs, seed=opts.seed)
    res = finetune(proto, train, held, cfg, teacher=str(ctx.path) if opts.distill else None, test=ctx.test,
                   progress=progress)  # fmt: skip
    return res, {"finetune": {**res.summary(), "config": asdict(cfg)}}


def run_prune(model: PathLike, opts: PruneOptions, progress: Callable[..., None] | None = None,
              finetune_progress: bool = True, warn: Callable[[str], None] | None = None) -> PruneRun:  # fmt: skip
    """Plan, cut, re-calibrate, fine-tune, measure; write the model (recording the run's preprocessing, with a
    sidecar beside it when the input had one) and the report; evaluate the gates. `warn` hears warnings
    that matter before the work is done (a near-chance original: wrong preprocessing)."""
    from agmc_onnx import bench, report
    from agmc_onnx.evaluate import evaluate_onnx
    from agmc_onnx.io import check_output_path, write_model

    strategy = opts.chosen_strategy()
    out = check_output_path(opts.output or default_output(model), model)
    json_path = Path(opts.report) if opts.report else out.with_name(out.name.removesuffix(".onnx") + ".report.json")
    check_output_path(json_path, model)
    if opts.finetune_epochs and opts.data is None:
        raise InputError("--finetune-epochs needs --data (training images)")
    ctx = build_context(model, opts.data, seed=opts.seed, sidecar=opts.sidecar, flags=opts.preprocess,
                        input_shapes=opts.input_shapes)  # fmt: skip
    result, prune_report = _plan_and_cut(model, opts, ctx, strategy, progress, warn, json_path)
    proto = result.proto
    stages: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    test = ctx.test
    original = str(model)
    # one count per model, the engine's (normalised original, written file): table, JSON and markdown agree
    before, after = prune_report["before"], prune_report["after"]
    stages["original"] = report.model_facts(original, None if test is None else evaluate_onnx(original, test),
                                            counts=(before["macs"], before["params"]))  # fmt: skip
    stages["pruned"] = report.model_facts(proto, None if test is None else evaluate_onnx(proto, test),
                                          counts=(after["macs"], after["params"]))  # fmt: skip
    final = "pruned"
    if opts.finetune_epochs:
        res, extra = _finetune(ctx, proto, opts, finetune_progress)
        proto, final = res.proto, "finetuned"
        stages["finetuned"] = report.model_facts(proto, res.test_accuracy_onnx, ctx.input_shapes)
    latency = None
    batches = list(opts.bench_batches)
    budget = prune_report.get("latency_budget")
    if budget:  # a latency-budgeted run is always measured, at the budget's batch too
        batches = list(dict.fromkeys([*batches, int(budget["batch"])]))
    if opts.bench or budget:
        latency = bench.bench([original, proto], batches, provider=opts.provider, threads=opts.threads,
                              repeats=opts.bench_repeats, labels=["original", final],
                              input_shapes=ctx.input_shapes).to_json()  # fmt: skip
    run = report.build("prune", stages, latency=latency, gates=opts.gates, command=opts.command, extra=extra)
    merged = {**prune_report, **run}
    merged["warnings"] = list(prune_report.get("warnings", [])) + report.latency_warnings(
        run, proto, opts.provider, opts.threads, ctx.input_shapes)  # fmt: skip
    if budget:  # predicted vs measured for latency-budgeted runs
        from agmc_onnx.latency import verification

        merged["latency_budget"] = verification(budget, latency)
        got = merged["latency_budget"].get("measured")
        if got is not None and not got["met"]:
            merged["warnings"].append(
                f"the latency budget was met on the predictor ({merged['latency_budget']['predicted_ms']:.3f} ms) "
                f"but not when measured: {got['pruned_ms']:.3f} ms, {got['speedup']:.2f}x vs the original")
    merged["output"] = str(out)
    stages[final]["path"] = str(out)
    written = write_model(ctx.describe(proto), out, model)
    sidecar = None
    try:
        if test is not None:
            self_check(written, test, stages[final].get("accuracy"))
        sidecar = ctx.write_sidecar(written)
        report.write(merged, json_path)
    except BaseException:
        for path in (written, sidecar):
            if path is not None:
                path.unlink(missing_ok=True)
        raise
    paths = [str(json_path), str(report.markdown_path(json_path))]
    png = (merged.get("search") or {}).get("png")
    merged["report_paths"] = paths + ([png] if png else [])
    return PruneRun(merged, result, strategy, out, merged["report_paths"], list(result.notes))
