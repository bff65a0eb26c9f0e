"""Policy transfer: a policy trained on one model, reused on another (zero-shot, warm start) vs from scratch.

For each strategy (agmc: the GNN state; amc: AMC's hand-made state, which is also layer-count free)
and seed: searches --source for --source-episodes (saving the policy), then on --target runs the
saved policy zero-shot (one greedy episode), a warm start for --episodes, and a fresh search for
the same --episodes (warm-up --warmup). Reports the best reward-split score, the written file's test
accuracy, seconds per episode and episodes to 99% of the best. `--jobs N` runs N strategy/seed
chains at a time in separate processes (`--threads 1`: one core each). Writes transfer.md /
transfer.json into --out.

    python benchmarks/transfer.py --source fixtures/models/resnet20.onnx --target-model fixtures/models/resnet56.onnx \
        --source-episodes 100 --episodes 40 --warmup 13 --out benchmarks/transfer_cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agmc_onnx.api import search_prune  # noqa: E402


def one(model: str, args: argparse.Namespace, strategy: str, seed: int, tmp: Path, label: str, **kw: Any) -> dict[str, Any]:
    """One search_prune run; its row."""
    t0 = time.perf_counter()
    r = search_prune(model, args.target, strategy, data=args.data, seed=seed, round_to=args.round_to,
                     output=tmp / f"{label}.onnx", device=args.device, threads=args.threads, **kw)  # fmt: skip
    seconds = time.perf_counter() - t0
    s, acc = r.report["search"], r.report["accuracy"]
    best = s["best_reward"]
    return {
        "strategy": strategy, "seed": seed, "run": label, "model": Path(model).name, "episodes": s["episodes"], "best_reward": best,
        "written_reward": acc["reward_split"]["pruned"], "written_test": acc["test"]["pruned"] if acc["test"] else None,
        "original_test": acc["test"]["original"] if acc["test"] else None,
        "s_per_episode": s["seconds_per_episode"], "seconds": seconds,
        "episodes_to_99pct": next((e["episode"] for e in s["curve"] if e["reward"] >= 0.99 * best), None),
    }  # fmt: skip


def chain(args: argparse.Namespace, strategy: str, seed: int) -> list[dict[str, Any]]:
    """Source search (policy saved), then zero-shot, warm start and from scratch on the target: four rows."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        policy = tmp / "policy.pt"
        rows.append(one(args.source, args, strategy, seed, tmp, "source", episodes=args.source_episodes, save_policy=policy))
        rows.append(one(args.target_model, args, strategy, seed, tmp, "zero-shot", episodes=0, policy=policy))
        rows.append(one(args.target_model, args, strategy, seed, tmp, "warm start", episodes=args.episodes, policy=policy))
        rows.append(one(args.target_model, args, strategy, seed, tmp, "from scratch", episodes=args.episodes, warmup=args.warmup))
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--target-model", "--target", dest="target_model", required=True)
    p.add_argument("--data", default=str(ROOT / "fixtures" / "data"))
    p.add_argument("--flops", dest="target", type=float, default=0.5)
    p.add_argument("--source-episodes", type=int, default=100)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--warmup", type=int, default=None, help="fresh search's random warm-up (default episodes // 3)")
    p.add_argument("--strategies", nargs="+", default=["agmc"], choices=["agmc", "amc"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1, help="strategy/seed chains at a time, each in its own process")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    chains = [(strategy, seed) for seed in args.seeds for strategy in args.strategies]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(chain, [args] * len(chains), *zip(*chains, strict=True)))
    else:
        done = [chain(args, strategy, seed) for strategy, seed in chains]
    rows = [r for rows in done for r in rows]
    command = "python benchmarks/transfer.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = ["# Policy transfer", "", f"`{command}`", "",
             "| strategy | seed | run | model | episodes | best reward | written: reward | written: test (original) | s/episode | episodes to 99% |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        test = f"{100 * r['written_test']:.2f} ({100 * r['original_test']:.2f})" if r["written_test"] is not None else "-"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['run']} | {r['model']} | {r['episodes']} | {100 * r['best_reward']:.2f} | "
                     f"{100 * r['written_reward']:.2f} | {test} | {r['s_per_episode']:.2f} | {r['episodes_to_99pct']} |")  # fmt: skip
    if len(args.seeds) > 1:
        lines += ["", "Means over seeds (best reward / written test):", "", "| strategy | run | best reward | written: test |", "|---|---|---|---|"]
        for strategy in args.strategies:
            for run in ("source", "zero-shot", "warm start", "from scratch"):
                rs = [r for r in rows if r["strategy"] == strategy and r["run"] == run]
                tests = [r["written_test"] for r in rs if r["written_test"] is not None]
                test = f"{100 * sum(tests) / len(tests):.2f}" if tests else "-"
                lines.append(f"| {strategy} | {run} | {100 * sum(r['best_reward'] for r in rs) / len(rs):.2f} | {test} |")
    text = "\n".join(lines) + "\n\nAccuracies in percent, no fine-tuning; warm start: no random warm-up.\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.md").write_text(text)
    (args.out / "transfer.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
