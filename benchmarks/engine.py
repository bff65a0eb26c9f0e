"""Engine benchmark: load + analyze + plan + prune at 0.5 MACs for torchvision ResNet-50, EfficientNet-B0,
DenseNet-121, Ultralytics YOLOv8n at 640 (its static export, and its dynamic=True export analysed at the
imgsz it records) and PaddleOCR's PP-OCRv4 det model at 640x640 (its input size is dynamic: --input-shape).

torchvision models are exported at 224x224 with random weights (no download) into --work (cached between
runs); YOLOv8n and PaddleOCR det are fixtures/wild.py's (they need the test-only packages: the README's
test set-up installs them).
Each stage is timed with time.perf_counter, best of --repeat runs; file I/O (reading the file's bytes,
writing the result) is timed apart and excluded from the total. Prints a markdown table.

    .venv/bin/python benchmarks/engine.py --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = ("resnet50", "efficientnet_b0", "densenet121", "yolov8n", "yolov8n_dyn", "paddle_det")
# files from other toolchains: fixtures/wild.py name and the input size analysed (None: the file's own)
# (their heads have many 16- to 64-channel groups: they are planned at the CLI's default --round-to auto)
WILD: dict[str, tuple[str, dict[str, tuple[int, ...]] | None]] = {
    "yolov8n": ("ultra_yolov8n", None),
    "yolov8n_dyn": ("ultra_yolov8n_dyn", None),  # imgsz [640, 640] from its metadata
    "paddle_det": ("paddle_det", {"x": (1, 3, 640, 640)}),
}


def export(name: str, work: Path) -> Path:
    """Export a torchvision model at 224 with seeded random weights, or build a wild fixture (once; cached)."""
    if name in WILD:
        path = work / f"{WILD[name][0]}.onnx"
        if not path.exists():
            from fixtures import wild

            work.mkdir(parents=True, exist_ok=True)
            wild.build(WILD[name][0], work)
        return path
    path = work / f"{name}_224.onnx"
    if path.exists():
        return path
    import torch
    import torchvision.models as tvm

    torch.manual_seed(0)
    model = getattr(tvm, name)(weights=None).eval()
    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=13,
            input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return path


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call fn; return its result and the seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_once(path: Path, target: float, round_to: int | str, out: Path,
             input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, float]:  # fmt: skip
    """One load -> analyze -> plan -> prune -> save pass; seconds per stage."""
    from agmc_onnx.analysis import analyze
    from agmc_onnx.model import load
    from agmc_onnx.plan import parse_round_to
    from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
    from agmc_onnx.surgery import prune

    _, read = _timed(path.read_bytes)  # the file's bytes from the page cache: the I/O part of load
    model, load_s = _timed(lambda: load(path, input_shapes=input_shapes))
    analysis, analyze_s = _timed(lambda: analyze(model))
    ctx = StrategyContext(analysis=analysis, budget=Budget(flops=target), round_to=parse_round_to(round_to))
    plan, plan_s = _timed(lambda: REGISTRY["uniform"]().propose(ctx))
    pruned, prune_s = _timed(lambda: prune(analysis, plan))
    _, save = _timed(lambda: onnx.save_model(pruned, str(out)))
    return {
        "read": read,
        "load": max(load_s - read, 0.0),
        "analyze": analyze_s,
        "plan": plan_s,
        "prune": prune_s,
        "save": save,
        "ratio": analysis.cost.plan_macs(plan) / analysis.cost.total_macs,  # exact (split groups: counts are not)
        "groups": float(len(analysis.groups)),
        "prunable": float(sum(g.prunable for g in analysis.groups)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".agmc-cache" / "bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    args = ap.parse_args(argv)
    import onnxruntime

    print(f"python {platform.python_version()}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{platform.processor() or platform.machine()}, best of {args.repeat}; seconds\n")  # fmt: skip
    print("| model | nodes | groups (prunable) | load | analyze | plan (uniform) | prune | **total excl. I/O** "
          "| read + write (I/O) | MACs kept |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        path = export(name, args.work)
        sizes = WILD[name][1] if name in WILD else None
        round_to = "auto" if name in WILD else args.round_to
        runs = [run_once(path, args.target, round_to, args.work / f"{name}.pruned.onnx", sizes)
                for _ in range(args.repeat)]  # fmt: skip
        best = {k: min(r[k] for r in runs) for k in runs[0]}
        totals = [r["load"] + r["analyze"] + r["plan"] + r["prune"] for r in runs]
        nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
        print(
            f"| {name} | {nodes} | {int(best['groups'])} ({int(best['prunable'])}) | {best['load']:.2f} "
            f"| {best['analyze']:.2f} | {best['plan']:.2f} | {best['prune']:.2f} | **{min(totals):.2f}** "
            f"(median {statistics.median(totals):.2f}) | {best['read'] + best['save']:.2f} | {best['ratio']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
