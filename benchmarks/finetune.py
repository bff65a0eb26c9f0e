"""Benchmark: ResNet-56 fixture at 50% MACs, test accuracy before/after fine-tuning (run by hand, GPU advised).

    .venv/bin/python benchmarks/finetune.py [--model fixtures/models/resnet56.onnx] [--data fixtures/data]
        [--strategy l1-global] [--epochs 30] [--distill] [--out benchmarks/finetune.md]

Prunes with the given strategy (agmc once the search has landed, l1-global otherwise), fine-tunes
through converters/ and writes a markdown table with the command, the run report beside it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agmc_onnx.api import PruneOptions, run_prune  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Prune, fine-tune, measure; write the markdown summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "fixtures" / "models" / "resnet56.onnx"))
    ap.add_argument("--data", default=str(ROOT / "fixtures" / "data"))
    ap.add_argument("--strategy", default="l1-global")
    ap.add_argument("--target-flops", type=float, default=0.5)
    ap.add_argument("--round-to", default="16")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--distill", action="store_true")
    ap.add_argument("--batch", default="64,1")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "finetune.md"))
    args = ap.parse_args(argv)
    if not Path(args.model).exists():
        print(f"{args.model} not found: train the fixture first (fixtures/train.py)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pruned.onnx"
        run = run_prune(args.model, PruneOptions(
            target_flops=args.target_flops, strategy=args.strategy, round_to=args.round_to, output=out,
            report=Path(args.out).with_suffix(".json"), data=args.data, finetune_epochs=args.epochs,
            distill=args.distill, bench_batches=tuple(int(b) for b in args.batch.split(",")),
        )).report  # fmt: skip
    m = run["models"]
    command = "python benchmarks/finetune.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Fine-tuning: ResNet-56 at 50% MACs", "", f"Command: `{command.strip()}`", "",
        "| model | test accuracy | MACs |", "|---|---:|---:|",
        *[f"| {k} | {100 * v['accuracy']:.2f}% | {v['macs']:,} |" for k, v in m.items()],
        "", f"Accuracy change vs unpruned: {-run['accuracy_drop_points']:+.2f} points; "
        f"speed-up {', '.join(f'{v:.2f}x at batch {k}' for k, v in run['speedup'].items())}", "",
    ]  # fmt: skip
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
