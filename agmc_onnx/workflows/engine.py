"""Plan and cut an ONNX file with a strategy: the engine's run (analysis, strategy, surgery, audit report)
with no data of its own; workflows.search adds scoring on data, workflows.prune the whole `prune` command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.analysis import Analysis, analyze
from agmc_onnx.errors import InputError
from agmc_onnx.io import check_output_path, write_json, write_model
from agmc_onnx.model import ModelGraph
from agmc_onnx.model import load as load_model
from agmc_onnx.plan import ImportanceCache, Plan, parse_round_to
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext, check_target
from agmc_onnx.surgery import prune as cut
from agmc_onnx.workflows.audit import build_report, uncounted_bodies, why_nothing_prunable
from agmc_onnx.workflows.context import own_preprocess, record_preprocess

PathLike = str | os.PathLike[str]


@dataclass
class PruneResult:
    """The pruned model, the plan that made it and the audit report."""

    proto: onnx.ModelProto
    plan: Plan
    report: dict[str, Any]
    analysis: Analysis
    output: Path | None = None
    notes: list[str] = field(default_factory=list)


def prune_model(
    path: PathLike,
    target_flops: float | None = None,
    strategy: str = "uniform",
    *,
    plan: PathLike | dict[str, Any] | Plan | None = None,
    round_to: int | str = "auto",
    importance: str = "l1",
    output: PathLike | None = None,
    report: PathLike | None = None,
    seed: int = 0,
    evaluator: Any = None,
    options: dict[str, Any] | None = None,
    analysis: Analysis | None = None,
    target_latency_ms: float | None = None,
    target_speedup: float | None = None,
    latency_batch: int = 1,
    provider: str = "cpu",
    threads: int | None = None,
    latency_cache: PathLike | None = None,
    latency_model: Any = None,
    latency_rounds: int = 0,
    latency_measure: Any = None,
    input_shapes: Any = None,
) -> PruneResult:
    """Load, analyse, plan with `strategy`, cut; write `output`/`report` (atomically) when given.

    `target_latency_ms` / `target_speedup` budget the latency predicted by a measured latency model
    (agmc_onnx.latency, for `provider`, `threads`, `latency_batch`; cached under `latency_cache`);
    they may be combined with `target_flops`, every constraint is met. `input_shapes` ({input: dims},
    --input-shape) fixes the size a file with dynamic input sizes is analysed at. With `latency_rounds` > 0 the
    plan is then measured against the original (or by `latency_measure`, a plan -> (original ms,
    pruned ms) callable) and shrunk while it misses the budget (agmc_onnx.latency.refine).
    """
    from agmc_onnx.budget import check_latency, check_speedup

    if plan is not None and strategy == "uniform" and target_flops is None:
        strategy = "plan"
    if strategy not in REGISTRY:
        raise InputError(f"unknown strategy {strategy!r} (choose from {', '.join(sorted(REGISTRY))})")
    if target_latency_ms is not None:
        target_latency_ms = check_latency(target_latency_ms)
    if target_speedup is not None:
        target_speedup = check_speedup(target_speedup)
    by_latency = target_latency_ms is not None or target_speedup is not None
    if strategy != "plan" and (target_flops is not None or not by_latency):
        target_flops = check_target(target_flops)
    n_round = parse_round_to(round_to)
    if analysis is None:
        analysis = analyze(path if isinstance(path, ModelGraph) else load_model(path, input_shapes=input_shapes))
    if output is not None:
        check_output_path(output, path)
    if report is not None:
        check_output_path(report, path)
    if not analysis.prunable_groups():
        raise InputError(f"nothing prunable: {why_nothing_prunable(analysis)} (see `agmc-onnx inspect`)", path)
    opts = dict(options or {})
    if plan is not None:
        opts["plan"] = plan if isinstance(plan, (dict, Plan)) else str(plan)
    if by_latency and latency_model is None:
        from agmc_onnx.latency import build_latency_model

        latency_model = build_latency_model(analysis, latency_batch, provider, threads, n_round, cache_dir=latency_cache)
    budget = Budget(flops=target_flops, latency_ms=target_latency_ms, speedup=target_speedup)
    ctx = StrategyContext(
        analysis=analysis, budget=budget, round_to=n_round, importance=importance,
        evaluator=evaluator, seed=seed, options=opts, path=str(path), latency=latency_model,
    )  # fmt: skip
    strat = REGISTRY[strategy]()
    chosen = strat.propose(ctx)
    notes = list(analysis.model.notes) + list(getattr(strat, "notes", []))
    for body in uncounted_bodies(analysis):
        notes.append(f"the {body['mac_ops']} MAC op(s) inside {body['op']} {body['node']}'s body are not counted "
                     "in MACs (and not pruned)")  # fmt: skip
    if by_latency and strategy == "plan":
        notes.append("the latency budget does not change a given --plan: its predicted latency is reported only")
    refinement = None
    if by_latency and strategy != "plan" and latency_rounds > 0:
        from agmc_onnx.latency import ort_measure, refine_plan

        measure = latency_measure or ort_measure(analysis, latency_model.batch, provider, threads)
        refinement = refine_plan(analysis, chosen, latency_model, budget, measure, n_round,
                                 ImportanceCache(analysis, importance), latency_rounds,
                                 score=evaluator.score if evaluator is not None else None)  # fmt: skip
        chosen = refinement.plan
        if refinement.note:
            notes.append(f"latency budget not met when measured: {refinement.note}")
    proto = cut(analysis, chosen)
    rep = build_report(
        analysis, chosen, proto, input=str(path), output=str(output) if output else None, strategy=strategy,
        target_flops=target_flops, round_to=n_round, importance=importance, warnings=notes,
    )
    if latency_model is not None:
        rep["latency_budget"] = {
            "target_latency_ms": target_latency_ms, "target_speedup": target_speedup,
            "limit_ms": latency_model.limit_ms(budget), "batch": latency_model.batch,
            "provider": provider, "threads": threads,
            "predicted_ms": latency_model.predict_plan(chosen), "predicted_original_ms": latency_model.predict({}),
            "measured_original_ms_at_build": latency_model.base_ms, "model": latency_model.summary(),
            "refine": None if refinement is None else refinement.to_json(),
        }  # fmt: skip
    out_path = None
    if output is not None:
        out_path = write_model(record_preprocess(proto, own_preprocess(analysis.model)), output, path)
    if report is not None:
        write_json(rep, report, path)
    return PruneResult(proto=proto, plan=chosen, report=rep, analysis=analysis, output=out_path, notes=notes)
