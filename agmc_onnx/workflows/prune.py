"""The `prune` command's whole job: plan (a rule or a search on data), cut, re-calibrate BN, fine-tune,
measure, report and gate. Everything is computed in memory and written at the end, so a run that fails
leaves no output behind; the written file is then read back and checked against the report."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx import io
from agmc_onnx.analysis import analyze
from agmc_onnx.errors import InputError
from agmc_onnx.strategies import SEARCH_STRATEGIES
from agmc_onnx.workflows.audit import default_output
from agmc_onnx.workflows.context import RunContext, self_check
from agmc_onnx.workflows.engine import PruneResult, prune_model
from agmc_onnx.workflows.options import PruneOptions
from agmc_onnx.workflows.validate import PruneRequest, validate_prune

PathLike = str | os.PathLike[str]
__all__ = ["PruneOptions", "PruneRun", "run_prune"]  # PruneOptions lives in workflows.options


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
        reward_images=opts.reward_images, agent=opts.agent, decoder=opts.decoder, encoder=opts.encoder,
        progress=progress,
        latency=opts.latency(), plan=opts.plan, threads=ctx.threads, warn=warn, workers=opts.workers,
        ray_address=opts.ray_address, reward=opts.reward, output_kinds=opts.output_kinds,
        output_weights=opts.output_weights,
    )  # fmt: skip
    return searched.prune, searched.report


def _finetune(ctx: RunContext, proto: onnx.ModelProto, opts: PruneOptions, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the pruned model on the run's training data: with labels (distilling from the original too with
    `distill`), without labels by distillation from the original alone."""
    from agmc_onnx.finetune import FinetuneConfig, finetune

    train, held = ctx.finetune_data()
    cfg = FinetuneConfig(epochs=opts.finetune_epochs, seed=opts.seed, augment=opts.augment, **opts.recipe)
    # the original as loaded (normalised): exporters' weight-sharing Identity nodes do not convert to torch
    teacher = ctx.model.proto if opts.distill or not ctx.labelled or opts.recipe.get("feature_points") else None
    res = finetune(proto, train, held, cfg, teacher=teacher, test=ctx.test, progress=progress,
                   output_kinds=opts.output_kinds, output_weights=opts.output_weights)  # fmt: skip
    mode = "cross-entropy" + (" + distillation" if teacher is not None else "") if ctx.labelled else "distillation (no labels)"
    return res, {"finetune": {**res.summary(), "config": asdict(cfg), "loss": mode}}


def run_prune(model: PathLike, opts: PruneOptions, progress: Callable[..., None] | None = None,
              finetune_progress: bool = True, warn: Callable[[str], None] | None = None,
              request: PruneRequest | None = None, note: Callable[[str], None] | None = None) -> PruneRun:  # fmt: skip
    """Plan, cut, re-calibrate, fine-tune, measure; write the model (recording the run's preprocessing, with a
    sidecar beside it when the input had one) and the report; evaluate the gates. `warn` hears warnings
    that matter before the work is done (a near-chance original: wrong preprocessing); `note` hears what the
    run decided for the user (preprocessing read from an exporter's metadata, inputs held out). Everything is
    checked first (`validate_prune`, or the `request` it returned); every file the run writes is committed at
    its end, or none when it fails (the search checkpoint excepted: it is what --resume continues from)."""
    req = request or validate_prune(model, opts)
    for line in req.context.notes:
        if note is not None:
            note(line)
    with io.staged(req.staged):
        return _run(model, opts, req, progress, finetune_progress, warn)


def _run(model: PathLike, opts: PruneOptions, req: PruneRequest, progress: Callable[..., None] | None,
         finetune_progress: bool, warn: Callable[[str], None] | None) -> PruneRun:  # fmt: skip
    """run_prune's work, inside its staged outputs."""
    from agmc_onnx import bench, report
    from agmc_onnx.evaluate import evaluate_onnx, fidelity_onnx, reference_fidelity

    strategy, ctx, out, json_path = req.strategy, req.context, req.output, req.report
    result, prune_report = _plan_and_cut(model, opts, ctx, strategy, progress, warn, json_path)
    proto = result.proto
    stages: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    test = ctx.test
    original = ctx.model.source or str(model)
    labelled = test is not None and test.labelled
    reference = None if test is None else reference_fidelity(original, test, opts.output_kinds, opts.output_weights)

    def facts(m: Any, accuracy: float | None = None, fidelity: float | None = None,
              counts: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
        out = report.model_facts(m, accuracy if accuracy is not None or not labelled else evaluate_onnx(m, test),
                                 ctx.input_shapes, counts)  # fmt: skip
        out["fidelity"] = fidelity if fidelity is not None or reference is None else fidelity_onnx(m, test, reference)
        return out

    # one count per model, the engine's (normalised original, written file): table, JSON and markdown agree
    before, after = prune_report["before"], prune_report["after"]
    stages["original"] = facts(original, fidelity=1.0 if reference is not None else None,
                               counts=(before["macs"], before["params"]))  # fmt: skip
    stages["pruned"] = facts(proto, counts=(after["macs"], after["params"]))
    final = "pruned"
    if opts.finetune_epochs:
        res, extra = _finetune(ctx, proto, opts, finetune_progress)
        proto, final = res.proto, "finetuned"
        stages["finetuned"] = facts(proto, res.test_accuracy_onnx)
    latency = None
    batches = list(opts.bench_batches)
    budget = prune_report.get("latency_budget")
    if budget:  # a latency-budgeted run is always measured, at the budget's batch too
        batches = list(dict.fromkeys([*batches, int(budget["batch"])]))
    if req.bench:
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
    merged["notes"] = list(ctx.notes)
    stages[final]["path"] = str(out)
    written = io.write_model(ctx.describe(proto), out, model)
    if test is not None:
        self_check(written, test, stages[final].get("accuracy"), reference, stages[final].get("fidelity"),
                   io.staged_file(written))
    ctx.write_sidecar(written)
    report.write(merged, json_path)
    paths = [str(json_path), str(report.markdown_path(json_path))]
    png = (merged.get("search") or {}).get("png")
    merged["report_paths"] = paths + ([png] if png else [])
    return PruneRun(merged, result, strategy, out, merged["report_paths"], list(result.notes))
