"""Benchmark: ORT CPU speed-up of ResNet-56 pruned to 50% MACs, widths rounded to 16 vs unrounded.

Run by hand (not a test):

    .venv/bin/python benchmarks/latency.py [--model resnet56.onnx] [--batch 64,1] [--threads N] [--out benchmarks/latency.md]

Without --model it uses fixtures/models/resnet56.onnx when present, else exports the CIFAR-style
ResNet-56 of fixtures/engine_nets.py with seeded random weights (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agmc_onnx import bench, report  # noqa: E402
from agmc_onnx.api import prune_model  # noqa: E402


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _source_model(arg: str | None, tmp: Path) -> tuple[Path, str]:
    """The model to prune and a description of where it came from."""
    if arg:
        return Path(arg), arg
    shipped = ROOT / "fixtures" / "models" / "resnet56.onnx"
    if shipped.exists():
        return shipped, "fixtures/models/resnet56.onnx (trained fixture)"
    from fixtures import engine_nets

    path = engine_nets.export_net("resnet56", tmp, "bn")
    return path, "fixtures/engine_nets.py resnet56, 3x32x32, seeded random weights, BN kept"


def main(argv: list[str] | None = None) -> int:
    """Prune at 50% MACs with round-to 16 and 1, time all three interleaved, write markdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--strategy", default="l1-global")
    ap.add_argument("--batch", default="64,1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "latency.md"))
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        src, origin = _source_model(args.model, tmp)
        variants = {"original": src}
        ratios = {}
        for round_to in (16, 1):
            out = tmp / f"pruned_r{round_to}.onnx"
            res = prune_model(src, args.target_flops, args.strategy, round_to=round_to, output=out)
            label = f"pruned round-to {round_to}"
            variants[label] = out
            ratios[label] = res.report["macs_ratio"]
        facts = {k: report.model_facts(v) for k, v in variants.items()}
        result = bench.bench(
            list(variants.values()), batches, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
            labels=list(variants),
        )  # fmt: skip
        costly = {
            b: bench.profile(variants["pruned round-to 1"], b, threads=args.threads)[:3] for b in batches
        }
    command = "python benchmarks/latency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Latency: ResNet-56 at 50% MACs, ORT CPU, widths rounded to 16 vs unrounded",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Model: {origin}; strategy `{args.strategy}`, target MACs {args.target_flops}.",
        f"Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs (shared with other jobs), "
        f"ORT threads {args.threads or 'default'}; {args.repeats} interleaved runs after {args.warmup} warm-up.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions().items()),
        "",
        "| model | MACs | kept MACs | params |",
        "|---|---:|---:|---:|",
    ]
    base = facts["original"]["macs"]
    for label, f in facts.items():
        lines.append(f"| {label} | {f['macs']:,} | {100 * f['macs'] / base:.1f}% | {f['params']:,} |")
    lines += [
        "",
        "| model | batch | median ms | p90 ms | speed-up vs original |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in result.timings:
        lines.append(
            f"| {t.model} | {t.batch} | {t.stats.median_ms:.3f} | {t.stats.p90_ms:.3f} | "
            f"{result.speedup(t.model, t.batch):.2f}x |"
        )
    lines += ["", "Most costly layers of the unrounded model (ORT profile):", ""]
    for b, costs in costly.items():
        lines.append(f"- batch {b}: " + ", ".join(f"{c.node} ({c.op}, {100 * c.share:.0f}%)" for c in costs))
    lines.append("")
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
