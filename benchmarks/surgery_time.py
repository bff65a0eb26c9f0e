"""Surgery timing: CPU time of surgery.prune / prune(check=False) / mask at a uniform 0.5 plan, and of the
evaluator's prune-mode step (prune(check=False) + onnx2torch conversion), per model.

CPU time (time.process_time, torch on one thread) rather than wall time, so that other jobs on a shared
machine disturb it less. The agmc_onnx imported is whichever PYTHONPATH names, so two versions compare
by running the script once per checkout, alternating:

    PYTHONPATH=/path/to/old /work/main/.venv/bin/python benchmarks/surgery_time.py fixtures/models/resnet56.onnx
    PYTHONPATH=$PWD         /work/main/.venv/bin/python benchmarks/surgery_time.py fixtures/models/resnet56.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any


def _cpu_ms(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Median and minimum CPU milliseconds of `reps` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times), min(times)


def time_model(path: str, reps: int) -> None:
    """Print the CPU time of each case on one model."""
    from agmc_onnx import surgery
    from agmc_onnx.analysis import analyze
    from agmc_onnx.evaluate import _to_torch
    from agmc_onnx.model import load
    from agmc_onnx.plan import plan_from_ratios

    a = analyze(load(path))
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()})
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "prune": (lambda: surgery.prune(a, plan), reps),
        "prune(check=False)": (lambda: surgery.prune(a, plan, check=False), reps),
        "mask": (lambda: surgery.mask(a, plan), reps),
        "prune-mode step": (lambda: _to_torch(surgery.prune(a, plan, check=False)), max(3, reps // 4)),
    }
    for name, (fn, n) in cases.items():
        med, best = _cpu_ms(fn, n)
        print(f"{path.rsplit('/', 1)[-1]:24s} {name:20s} CPU median {med:8.1f} ms  min {best:8.1f} ms  (n={n})")


def main(argv: list[str] | None = None) -> int:
    """Time every case on every model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    for path in args.models:
        time_model(path, args.reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
