"""Parallel search benchmark (issue 18): the agmc search scored by 1 vs N workers, one thread each.

For each seed, the same search (`search_prune`, agmc + DDPG, MACs target 0.5) runs once per worker
count, one run at a time (never two at once: they would share the cores being measured), seeds
interleaved. Reported per run: episodes per second of the search (episodes / their own seconds,
worker start-up excluded) and of the whole call, the best reward, the written file's reward-split
and test accuracy, each worker's mean scoring seconds per candidate, and the 1-minute load average
sampled every 5 s during the run (the machine may be shared: a load above the cores the run uses
means the figures are not representative). workers=1 scores in process (one torch thread);
workers=N on N Ray actors (embedded Ray, one CPU core and one thread each), N episodes per policy
version. Writes parallel.json and parallel.md into --out.

CPU (2 cores; ResNet-56, 1000 reward + 256 calibration images):
    python benchmarks/parallel.py --model fixtures/models/resnet56.onnx --data fixtures/data \
        --episodes 300 --seeds 0 1 2 --workers 1 2 --out benchmarks/parallel_resnet56_cpu
GPU (one GPU shared by the workers):
    python benchmarks/parallel.py --device cuda --episodes 300 --seeds 0 --workers 1 4 --out OUT
Needs the ray extra (pip install 'agmc-onnx[cpu,ray]') for workers > 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every `every` seconds until stopped."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [os.getloadavg()[0]], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        self.stop.set()
        self.join()
        return {"mean": float(np.mean(self.samples)), "max": float(np.max(self.samples)), "samples": len(self.samples)}


def one_run(args: argparse.Namespace, seed: int, workers: int) -> dict[str, Any]:
    """One search; its throughput, quality, per-worker scoring time and the load during it."""
    from agmc_onnx.api import search_prune

    out = args.out / f"runs/seed{seed}_w{workers}"
    out.mkdir(parents=True, exist_ok=True)
    sampler = LoadSampler()
    sampler.start()
    t0 = time.perf_counter()
    r = search_prune(args.model, args.target, "agmc", data=args.data, episodes=args.episodes, seed=seed,
                     output=out / "pruned.onnx", round_to=args.round_to, reward_images=args.reward_images,
                     device=args.device, threads=1, workers=workers)  # fmt: skip
    wall = time.perf_counter() - t0
    load = sampler.summary()
    s, acc = r.report["search"], r.report["accuracy"]
    episodes = len(r.search.curve)
    search_s = float(sum(e.seconds for e in r.search.curve))
    row = {
        "seed": seed, "workers": workers, "episodes": episodes, "wall_s": wall, "search_s": search_s,
        "episodes_per_s": episodes / search_s, "episodes_per_s_wall": episodes / wall,
        "best_reward": r.search.best_reward, "best_episode": r.search.best_episode,
        "written_reward": acc["reward_split"]["pruned"], "test": acc["test"]["pruned"] if acc["test"] else None,
        "macs_ratio": r.report["macs_ratio"], "per_worker": s["workers"]["per_worker"],
        "restarts": s["workers"]["restarts"], "load": load, "evaluator_mode": s["evaluator_mode"],
        "best_curve": [e.best for e in r.search.curve],
    }  # fmt: skip
    print(f"seed {seed} workers {workers}: {row['episodes_per_s']:.3f} ep/s (wall {wall:.0f} s), best "
          f"{row['best_reward']:.4f}, test {row['test']}, load {load['mean']:.2f} (max {load['max']:.2f})",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = np.asarray(values, float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def render(result: dict[str, Any]) -> str:
    """parallel.md: the command, the machine, one row per run, the speed-ups and the quality per worker count."""
    rows = result["rows"]
    lines = ["# Parallel search benchmark", "", f"`{result['command']}`", "",
             f"{result['machine']}; wall {result['wall_s']:.0f} s", "",
             "| seed | workers | episodes | search s | ep/s | ep/s incl. start-up | s/candidate per worker | best reward | "
             "written: reward | written: test | load avg (mean / max) |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        each = " / ".join(f"{p['seconds_per_candidate']:.2f}" for p in r["per_worker"] if p["seconds_per_candidate"])
        test = "-" if r["test"] is None else f"{100 * r['test']:.2f}"
        lines.append(f"| {r['seed']} | {r['workers']} | {r['episodes']} | {r['search_s']:.0f} | {r['episodes_per_s']:.3f} | "
                     f"{r['episodes_per_s_wall']:.3f} | {each} | {100 * r['best_reward']:.2f} | "
                     f"{100 * r['written_reward']:.2f} | {test} | {r['load']['mean']:.2f} / {r['load']['max']:.2f} |")  # fmt: skip
    counts = sorted({r["workers"] for r in rows})
    lines += ["", "Per worker count (mean ± std over seeds):", "",
              "| workers | runs | ep/s | best reward | written: test | load avg |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for w in counts:
        rs = [r for r in rows if r["workers"] == w]
        lines.append(f"| {w} | {len(rs)} | {_ms([r['episodes_per_s'] for r in rs], 1, 3)} | "
                     f"{_ms([r['best_reward'] for r in rs], 100)} | "
                     f"{_ms([r['test'] for r in rs if r['test'] is not None], 100)} | "
                     f"{_ms([r['load']['mean'] for r in rs])} |")  # fmt: skip
    base = counts[0]
    lines += ["", f"Speed-up of episodes per second over workers={base}, same seed:", ""]
    for w in counts[1:]:
        pairs = [(a, b) for a in rows for b in rows if a["seed"] == b["seed"] and a["workers"] == base and b["workers"] == w]
        ups = [b["episodes_per_s"] / a["episodes_per_s"] for a, b in pairs]
        lines.append(f"- workers={w}: " + ", ".join(f"seed {a['seed']} {u:.2f}x" for (a, _), u in zip(pairs, ups, strict=True))
                     + (f"; mean {np.mean(ups):.2f}x" if ups else ""))  # fmt: skip
    lines += ["", "Notes:", ""] + [f"- {n}" for n in result.get("notes", [])] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "fixtures/models/resnet56.onnx")
    p.add_argument("--data", type=Path, default=ROOT / "fixtures/data")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reward-images", type=int, default=1000)
    p.add_argument("--round-to", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting runs past this many seconds")
    p.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--render", type=Path, default=None, help="re-write parallel.md from this parallel.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        result["notes"] = result.get("notes", []) + args.note
        (args.out / "parallel.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "parallel.md").write_text(render(result))
        return 0
    import torch

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    machine = (f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
               f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")  # fmt: skip
    result: dict[str, Any] = {"command": command, "machine": machine, "rows": [], "notes": args.note}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for w in args.workers:
            done = [r["wall_s"] for r in result["rows"] if r["workers"] == w]
            if args.time_budget and done and time.perf_counter() - t0 + 1.1 * done[-1] > args.time_budget:
                print(f"time budget: seed {seed} workers {w} not started", file=sys.stderr)
                continue
            result["rows"].append(one_run(args, seed, w))
            result["wall_s"] = time.perf_counter() - t0
            (args.out / "parallel.json").write_text(json.dumps(result, indent=1) + "\n")
            (args.out / "parallel.md").write_text(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
