"""Latency-aware pruning benchmark: predictor error on random plans, and accuracy at equal measured speed-up.

    .venv/bin/python benchmarks/latency_aware.py --models resnet56 mobilenetv2 --batches 1 64 --threads 1

(a) For each model and batch: build the latency tables (ORT CPU), draw `--plans` random plans
    (keep ratio per group uniform in [0.1, 1], rounded), prune them, and measure the original and all
    plans in ONE interleaved run (bench.measure); error = (predicted - measured) / measured.
(b) At batch `--accuracy-batch`, for each `--speedups` target: l1-global under the latency budget
    (predictor), then l1-global and uniform under a MACs budget chosen (by the same predictor) to be
    as fast; the three are re-measured together with the original, and scored on the reward split
    (train data, BN re-calibrated, no fine-tuning). Writes markdown (default benchmarks/latency_aware.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agmc_onnx.api import analyze  # noqa: E402
from agmc_onnx.bench import SESSIONS, make_inputs, measure_sessions  # noqa: E402
from agmc_onnx.latency import build_latency_model, machine_id, ort_runner_factory  # noqa: E402
from agmc_onnx.plan import ImportanceCache, plan_from_counts, round_count  # noqa: E402
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext  # noqa: E402
from agmc_onnx.surgery import prune  # noqa: E402


def load() -> str:
    """The 1/5/15-minute load averages."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def measure_models(protos: list, batch: int, threads: int, repeats: int) -> list[float]:
    """Median ms of each model (its fastest of bench.SESSIONS sessions), all measured in one interleaved run."""
    make = ort_runner_factory("cpu", threads)
    runners = []
    for p in protos:
        feeds = make_inputs(p, batch)
        runners.append([make(p, feeds) for _ in range(SESSIONS)])
    return [float(np.median(s)) for s in measure_sessions(runners, 3, repeats, time.perf_counter)]


def error_study(name: str, batch: int, args: argparse.Namespace, lines: list[str]) -> None:
    """(a): predicted vs measured latency of random plans."""
    a = analyze(ROOT / "fixtures" / "models" / f"{name}.onnx")
    t0 = time.perf_counter()
    lm = build_latency_model(a, batch, "cpu", args.threads, args.round_to, cache_dir=args.cache, use_cache=False)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    cache = ImportanceCache(a)
    plans = []
    for _ in range(args.plans):
        counts = {g.id: round_count(rng.uniform(0.1, 1.0) * g.size, g.size, args.round_to) for g in a.prunable_groups()}
        plans.append(plan_from_counts(a, counts, cache))
    protos = [a.model.proto] + [prune(a, p) for p in plans]
    repeats = args.repeats if batch == 1 else max(5, args.repeats // 4)
    before = load()
    if args.paired:  # each plan interleaved with the original alone (warm caches, as deployed)
        pairs = [measure_models([protos[0], p], batch, args.threads, repeats) for p in protos[1:]]
        meas = [float(np.median([o for o, _ in pairs]))] + [m for _, m in pairs]
        base = [o for o, _ in pairs]
    else:  # all plans and the original in one interleaved run
        meas = measure_models(protos, batch, args.threads, repeats)
        base = [meas[0]] * len(plans)
    pred = [lm.predict({})] + [lm.predict_plan(p) for p in plans]
    err = np.abs((np.array(pred) - np.array(meas)) / np.array(meas))[1:]
    speed = np.array(base) / np.array(meas[1:])
    pspeed = pred[0] / np.array(pred[1:])
    serr = np.abs(pspeed - speed) / speed
    lines.append(
        f"| {name} | {batch} | {len(plans)} | {100 * np.median(err):.1f}% | {100 * np.percentile(err, 90):.1f}% | "
        f"{100 * err.max():.1f}% | {100 * np.median(serr):.1f}% | {meas[0]:.3f} | {pred[0]:.3f} | "
        f"{speed.min():.2f}-{speed.max():.2f}x | {lm.table.measurements} | {build_s:.1f} | {before} |"
    )
    print(lines[-1], flush=True)


def accuracy_study(name: str, args: argparse.Namespace, lines: list[str]) -> None:
    """(b): accuracy at equal measured speed-up: latency-budgeted l1-global vs MACs-budgeted l1-global and uniform."""
    from agmc_onnx.api import load_search_data
    from agmc_onnx.evaluate import Evaluator

    a = analyze(ROOT / "fixtures" / "models" / f"{name}.onnx")
    batch = args.accuracy_batch
    lm = build_latency_model(a, batch, "cpu", args.threads, args.round_to, cache_dir=args.cache)
    sd = load_search_data(a.model, ROOT / "fixtures" / "data", args.reward_images, args.seed)
    ev = Evaluator(a, sd.reward, sd.calibration, bn_recalibrate=True, threads=1)
    for s in args.speedups:
        lat_plan = REGISTRY["l1-global"]().propose(StrategyContext(a, Budget(speedup=s), args.round_to, latency=lm))
        limit = lm.predict_plan(lat_plan)
        rows = [("l1-global, latency budget", lat_plan, None)]
        for strat in ("l1-global", "uniform"):
            best = _as_fast(a, lm, limit, args.round_to, strat)
            if best is not None:
                rows.append((f"{strat}, MACs budget", best[0], best[1]))
        protos = [a.model.proto] + [prune(a, p) for _, p, _ in rows]
        repeats = args.repeats if batch == 1 else max(5, args.repeats // 4)
        before = load()
        meas = measure_models(protos, batch, args.threads, repeats)
        for (label, p, f), m in zip(rows, meas[1:], strict=True):
            acc = ev.score(p)
            macs = a.cost.plan_macs(p) / a.cost.total_macs
            lines.append(
                f"| {name} | {s:g}x | {label} | {'-' if f is None else f'{f:.2f}'} | {macs:.3f} | "
                f"{lm.predict_plan(p):.3f} | {m:.3f} | {meas[0] / m:.2f}x | {100 * acc:.2f}% | {before} |"
            )
            print(lines[-1], flush=True)


def _as_fast(a: Any, lm: Any, limit: float, round_to: Any, strategy: str = "uniform") -> tuple[Any, float] | None:
    """The `strategy` plan at the largest MACs fraction (step 0.02) predicted within `limit` ms, and that fraction."""
    best = None
    for f in np.arange(0.10, 1.0, 0.02):
        try:
            p = REGISTRY[strategy]().propose(StrategyContext(a, Budget(flops=float(f)), round_to))
        except Exception:  # noqa: BLE001 - unreachable fractions are skipped
            continue
        if lm.predict_plan(p) <= limit:
            best = (p, float(f))
    return best


def search_study(name: str, args: argparse.Namespace, lines: list[str]) -> None:
    """(c): latency-budgeted agmc vs MACs-budgeted agmc vs uniform at one speed-up, before and after fine-tuning.

    The MACs budget is the largest fraction whose uniform plan the latency model predicts as fast as the
    speed-up target (what a user converting "2x faster" into a FLOPs number would pick at best); all
    three plans are then re-measured together with the original, scored on the reward split and the
    test split (written file, BN re-calibrated), and fine-tuned the same way.
    """
    import torch

    from agmc_onnx.api import load_search_data
    from agmc_onnx.bn import recalibrated_onnx
    from agmc_onnx.evaluate import Evaluator, evaluate_onnx
    from agmc_onnx.finetune import FinetuneConfig, finetune
    from agmc_onnx.latency.refine import ort_measure, refine_plan
    from agmc_onnx.plan import parse_round_to
    from agmc_onnx.rl.runner import run_search

    torch.set_num_threads(args.torch_threads)
    a = analyze(ROOT / "fixtures" / "models" / f"{name}.onnx")
    rt = parse_round_to(args.search_round_to)
    batch = args.accuracy_batch
    lm = build_latency_model(a, batch, "cpu", args.threads, rt, cache_dir=args.cache)
    sd = load_search_data(a.model, ROOT / "fixtures" / "data", args.search_reward_images, args.seed)
    ev = Evaluator(a, sd.reward, sd.calibration, bn_recalibrate=True, calib_images=256, threads=args.torch_threads)
    orig_test = evaluate_onnx(a.model.proto, sd.test)
    base_ms = lm.predict({})
    orig_ms: list[float] = []
    measure_fn, cache = ort_measure(a, batch, "cpu", args.threads), ImportanceCache(a)

    def refined(plan: Any, budget: Budget) -> tuple[Any, str]:
        """The plan after the measured refinement `prune --target-speedup` applies, and its rounds."""
        ref = refine_plan(a, plan, lm, budget, measure_fn, rt, cache, args.latency_rounds,
                          score=ev.score if args.scored_refine else None)  # fmt: skip
        return ref.plan, "refined: " + " -> ".join(f"{r.original_ms / r.measured_ms:.2f}x" for r in ref.rounds)

    for s in args.speedups:
        fast = _as_fast(a, lm, base_ms / s, rt)
        if fast is None:
            print(f"{name} {s}x: no uniform plan is predicted that fast", flush=True)
            continue
        uniform_plan, f = fast
        rows: list[tuple[str, object, str]] = []
        for label, budget, latency in ((f"agmc, {s:g}x latency budget", Budget(speedup=s), lm),
                                       (f"agmc, {f:.2f} MACs budget", Budget(flops=f), None)):  # fmt: skip
            ctx = StrategyContext(a, budget, rt, evaluator=ev, seed=args.seed,
                                  options={"episodes": args.search_episodes}, latency=latency)  # fmt: skip
            t0 = time.perf_counter()
            plan, res = run_search(ctx, "agmc")
            took = f"{time.perf_counter() - t0:.0f} s, search reward {100 * res.best_reward:.1f}%"
            if latency is not None and args.latency_rounds:  # what `prune --target-speedup` does by default
                plan, rounds = refined(plan, budget)
                took += ", " + rounds
            rows.append((label, plan, took))
            print(f"{name} {label}: searched in {rows[-1][2]}", flush=True)
        if args.latency_rounds:  # the MACs-budgeted plan brought to the speed-up by the same refinement
            rows.append((f"agmc, {f:.2f} MACs budget, then refined to {s:g}x", *refined(rows[1][1], Budget(speedup=s))))
        rows.append((f"uniform, {f:.2f} MACs budget", uniform_plan, "-"))
        written = [recalibrated_onnx(prune(a, p), ev.calib, ev.batch_size, "cpu") for _, p, _ in rows]
        before = load()
        repeats = args.repeats if batch == 1 else max(5, args.repeats // 4)
        meas = measure_models([a.model.proto, *written], batch, args.threads, repeats)
        orig_ms.append(meas[0])
        for (label, plan, took), proto, m in zip(rows, written, meas[1:], strict=True):
            cfg = FinetuneConfig(epochs=args.finetune_epochs, device="cpu", seed=args.seed)
            ft = finetune(proto, sd.calibration, sd.reward, cfg, test=sd.test, progress=False)
            lines.append(
                f"| {name} | {s:g}x | {label} | {a.cost.plan_macs(plan) / a.cost.total_macs:.3f} | "
                f"{lm.predict_plan(plan):.3f} | {m:.3f} | {meas[0] / m:.2f}x | {100 * ev.score(plan):.2f}% | "
                f"{100 * evaluate_onnx(proto, sd.test):.2f}% | {100 * (ft.test_accuracy_onnx or 0):.2f}% | "
                f"{took} | {before} |"
            )
            print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"{name}: original measured {', '.join(f'{m:.3f}' for m in orig_ms)} ms (one per target), "
                 f"{base_ms:.3f} ms predicted; original test accuracy {100 * orig_test:.2f}%.")  # fmt: skip
    lines.append("")


def main() -> None:
    """Run both studies and write the markdown."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet56", "mobilenetv2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plans", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--speedups", nargs="+", type=float, default=[1.5, 2.0])
    ap.add_argument("--accuracy-batch", type=int, default=1)
    ap.add_argument("--accuracy-models", nargs="+", default=None, help="default: --models")
    ap.add_argument("--reward-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="latency table cache dir (default ~/.cache/agmc-onnx/latency)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "latency_aware.md"))
    ap.add_argument("--paired", action="store_true",
                    help="(a): measure each plan interleaved with the original alone, not all 21 models in one run")
    ap.add_argument("--skip-accuracy", action="store_true", help="run (a) only")
    ap.add_argument("--search-models", nargs="+", default=[], help="(c): models for the agmc study (default none)")
    ap.add_argument("--search-episodes", type=int, default=100)
    ap.add_argument("--search-reward-images", type=int, default=1000)
    ap.add_argument("--search-round-to", default="auto")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--latency-rounds", type=int, default=2, help="(c): measured refinement of the latency-budgeted plan")
    ap.add_argument("--scored-refine", action="store_true",
                    help="(c): the refinement picks its cuts by the evaluator's score, as `prune --data` does")
    ap.add_argument("--skip-errors", action="store_true", help="skip (a)")
    args = ap.parse_args()
    cmd = "python benchmarks/latency_aware.py " + " ".join(sys.argv[1:])
    err_lines = ["| model | batch | plans | median abs error | p90 | max | median speed-up error | original measured ms "
                 "| original predicted ms | measured speed-ups | table measurements | table build s | load 1/5/15 |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]  # fmt: skip
    for name in [] if args.skip_errors else args.models:
        for batch in args.batches:
            error_study(name, batch, args, err_lines)
    acc_lines = ["| model | target | plan | MACs budget | MACs kept | predicted ms | measured ms | measured speed-up "
                 "| reward-split acc (BN re-cal.) | load 1/5/15 |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name in [] if args.skip_accuracy else args.accuracy_models or args.models:
        accuracy_study(name, args, acc_lines)
    search_lines = ["| model | target | plan | MACs kept | predicted ms | measured ms | measured speed-up "
                    "| reward-split acc (BN re-cal.) | test acc, no fine-tuning | test acc, fine-tuned | search | "
                    "load 1/5/15 |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name in args.search_models:
        search_study(name, args, search_lines)
    text = "\n".join([
        "# Latency-aware pruning benchmark", "", f"`{cmd}`", "",
        f"Machine: {machine_id()}, ORT CPU, intra-op threads {args.threads}, round-to {args.round_to}. "
        "The machine is shared with other jobs (load averages per row); every comparison is one interleaved "
        "run (bench.measure), medians.", "",
        "## (a) Predicted vs measured latency of random plans", "",
        "Each plan " + ("measured interleaved with the original alone" if args.paired else
                        "measured in one interleaved run with the original and every other plan") + ".", "",
        *err_lines, "",
        f"## (b) Accuracy at equal speed-up (batch {args.accuracy_batch})", "",
        "MACs-budgeted plans take the largest MACs fraction (step 0.02) that the latency model predicts no slower "
        "than the latency-budgeted plan; all three are re-measured together with the original. Accuracy: reward "
        "split of the train data, BN re-calibrated, no fine-tuning.", "", *acc_lines, "",
        f"## (c) Searched plans at equal speed-up (batch {args.accuracy_batch}, round-to {args.search_round_to})", "",
        f"agmc ({args.search_episodes} episodes, {args.search_reward_images} reward images) under the speed-up "
        f"budget (action wall on the predicted latency, then {args.latency_rounds} measured refinement rounds at most, "
        "as `prune --target-speedup` does) vs agmc under the MACs budget whose uniform plan the "
        "latency model predicts as fast vs that uniform plan. All three re-measured together with the original; "
        f"written files BN re-calibrated; fine-tuned {args.finetune_epochs} epochs on the rest of the shipped "
        "train subset (SGD, cosine, augmentation), best epoch on the reward split, ONNX Runtime test accuracy.",
        "", *search_lines, "",
    ])  # fmt: skip
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
