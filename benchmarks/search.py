"""Search benchmark: agmc vs amc vs random vs uniform vs l1-global at one MACs target, equal episode budgets.

Every plan is scored the same way: reward-split accuracy with and without BN re-calibration, test
accuracy in ONNX Runtime (original BN statistics: what the written file holds), seconds per episode and
episodes to reach 99% of the final best reward. Writes a markdown table (and JSON) with the command.

CPU, small:  python benchmarks/search.py --models /tmp/flatten_gemm.bn.onnx --episodes 30 --seeds 0
GPU, big:    python benchmarks/search.py --models fixtures/models/resnet56.onnx fixtures/models/resnet20.onnx \
                 --episodes 300 --seeds 0 1 2 --reward-images 5000 --out benchmarks/search.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agmc_onnx.api import analyze  # noqa: E402
from agmc_onnx.evaluate import Evaluator, device_default, evaluate_onnx  # noqa: E402
from agmc_onnx.plan import ImportanceCache, plan_from_counts  # noqa: E402
from agmc_onnx.rl.runner import run_search  # noqa: E402
from agmc_onnx.search import load_search_data  # noqa: E402
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext  # noqa: E402
from agmc_onnx.surgery import prune  # noqa: E402

SEARCHES = ("agmc", "amc", "random")
RULES = ("uniform", "l1-global")


def bench_model(path: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All strategies x seeds x BN settings on one model."""
    a = analyze(path)
    sd = load_search_data(a.model, args.data, args.reward_images, 0)
    rows = []
    evs = {bn: Evaluator(a, sd.reward, sd.calibration, bn_recalibrate=bn, threads=args.threads) for bn in (True, False)}
    cache = ImportanceCache(a, "l1")
    for bn in (True, False) if args.both_bn else (True,):
        for strategy in args.strategies:
            seeds = args.seeds if strategy in SEARCHES else [0]
            for seed in seeds:
                ctx = StrategyContext(analysis=a, budget=Budget(flops=args.target), round_to=args.round_to,
                                      evaluator=evs[bn], seed=seed, options={"episodes": args.episodes}, path=path)
                t0 = time.perf_counter()
                curve: list[Any] = []
                if strategy in SEARCHES:
                    plan, res = run_search(ctx, strategy)
                    curve = res.curve
                else:
                    plan = REGISTRY[strategy]().propose(ctx)
                seconds = time.perf_counter() - t0
                plan = plan_from_counts(a, plan.keep_counts(), cache)
                proto = prune(a, plan)
                best = max((e.reward for e in curve), default=None)
                rows.append({
                    "model": Path(path).name, "strategy": strategy, "seed": seed, "search_bn": bn,
                    "macs_ratio": a.cost.macs(plan.keep_counts()) / a.cost.total_macs,
                    "reward_bn": evs[True].score(plan), "reward_raw": evs[False].score(plan),
                    "test_raw_ort": evaluate_onnx(proto, sd.test) if sd.test is not None else None,
                    "seconds": seconds, "s_per_episode": seconds / len(curve) if curve else None,
                    "episodes_to_99pct": next((e.episode for e in curve if best and e.reward >= 0.99 * best), None),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """A table per model, means over seeds."""
    lines = [f"# Search benchmark\n\n`{command}`\n\ndevice: {device_default()}\n"]
    lines.append("| model | strategy | search BN recal | seeds | MACs | reward acc (BN recal) | reward acc (raw) | test acc (raw, ORT) | s/episode | episodes to 99% |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["model"], r["strategy"], r["search_bn"]) for r in rows}, key=str)
    for key in keys:
        rs = [r for r in rows if (r["model"], r["strategy"], r["search_bn"]) == key]

        def m(k: str, rs: list[dict[str, Any]] = rs) -> str:
            v = [r[k] for r in rs if r[k] is not None]
            return f"{np.mean(v):.4f} ± {np.std(v):.4f}" if v else "-"

        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(rs)} | {m('macs_ratio')} | {m('reward_bn')} | "
                     f"{m('reward_raw')} | {m('test_raw_ort')} | {m('s_per_episode')} | {m('episodes_to_99pct')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data", default=str(ROOT / "fixtures" / "data"))
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(SEARCHES + RULES))
    p.add_argument("--reward-images", type=int, default=2000)
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--both-bn", action="store_true", help="also search with raw (not re-calibrated) rewards")
    p.add_argument("--out", type=Path, default=None, help="markdown file (JSON rows beside it)")
    args = p.parse_args(argv)
    rows = [r for path in args.models for r in bench_model(path, args)]
    text = markdown(rows, "python benchmarks/search.py " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
