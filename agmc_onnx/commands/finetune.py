"""`agmc-onnx finetune`: fine-tune a pruned ONNX model in PyTorch, export it, report and gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agmc_onnx.commands._options import (
    BATCHES,
    distill_from,
    distill_options,
    gate_options,
    gates_from,
    input_shape_option,
    input_shapes_from,
    preprocess_from,
    preprocess_options,
)


def _default_output(model: str) -> Path:
    """MODEL.finetuned.onnx beside the input."""
    p = Path(model)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".finetuned.onnx")


@click.command("finetune")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True),
    help="Labelled images (IDX, CIFAR, class folders or .npz) with train and test splits, or data without labels "
    "(a flat folder of images or frames, an .npy/.npz of images or input tensors): distilled from --distill.",
)
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fine-tuned model (default MODEL.finetuned.onnx).",
)
@click.option(
    "--distill",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Original ONNX model to distil from (teacher run in torch; required when the data has no labels).",
)
@click.option(
    "--original",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Unpruned model for the report's baseline (default: the --distill model).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON report (a markdown summary is written beside it; default OUTPUT.report.json).",
)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (default 0.01 SGD, 1e-3 AdamW).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--held-out",
    type=click.IntRange(min=1),
    default=None,
    help="Training examples held out to pick the best epoch (default: a fifth, at most 5000).",
)
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Image inputs: random crop + flip (+ --color-jitter); off for non-images.")
@click.option(
    "--flip/--no-flip", default=True, show_default=True, help="Horizontal flips in the augmentation."
)
@click.option("--distill-alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--device", type=str, default=None, help="torch device (default cuda when present, else cpu).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, help="Progress bar per epoch.")
@click.option("--bench/--no-bench", "do_bench", default=True, show_default=True, help="Measure ORT latency.")
@click.option("--bench-batch", type=BATCHES, default="1", show_default=True,
              help="Batch sizes for latency, e.g. 1,64.")
@click.option("--bench-repeats", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ORT intra-op threads.")
@distill_options
@input_shape_option
@preprocess_options
@gate_options
def finetune_cmd(model: str, data_dir: str, **kw: Any) -> None:
    """Fine-tune MODEL on --data for --epochs, export it, measure it, write the report, apply gates."""
    from agmc_onnx import report
    from agmc_onnx.workflows.validate import validate_finetune

    gates = gates_from(kw)
    preprocess = preprocess_from(kw)
    batches = kw.pop("bench_batch")
    kw["input_shapes"] = input_shapes_from(kw)
    kw["recipe"] = distill_from(kw)
    output = Path(kw.pop("output") or _default_output(model))
    request = validate_finetune(  # every flag, path and input, before torch is imported
        model, data_dir, output=output, report_path=kw["report_path"], distill=kw["distill"],
        original=kw["original"], held_out=kw["held_out"], do_bench=kw["do_bench"], provider=kw["provider"],
        threads=kw["threads"], gates=gates, preprocess=preprocess, sidecar=kw["sidecar"], seed=kw["seed"],
        input_shapes=kw["input_shapes"], feature_points=kw["recipe"].get("feature_points", 0),
    )  # fmt: skip
    from agmc_onnx.api import run_finetune

    run = run_finetune(model, data_dir, output=output, gates=gates, bench_batches=batches, preprocess=preprocess,
                       request=request, note=lambda m: click.echo(f"agmc-onnx: note: {m}", err=True), **kw)  # fmt: skip
    render(run)
    report.enforce(run.report)


def render(run: Any) -> None:
    """Print the accuracies, latency and where the files went."""
    rep = run.report
    res = run.result
    for stage, facts in rep["models"].items():
        acc, fid = facts.get("accuracy"), facts.get("fidelity")
        shown = "-" if acc is None else f"{100 * acc:.2f}%"
        fidelity = "" if fid is None else f"  fidelity {100 * fid:.2f}%"
        click.echo(
            f"{stage:10s} test accuracy {shown:>8s}{fidelity}  MACs {facts['macs']:,}  params {facts['params']:,}"
        )
    what = "held-out fidelity" if res.selected_by == "fidelity" else "held-out"
    click.echo(
        f"best epoch {res.best_epoch} ({what} {100 * res.best_held_out:.2f}%, was {100 * res.initial_held_out:.2f}%)"
    )
    for batch, speedup in (rep.get("speedup") or {}).items():
        click.echo(f"speed-up vs original at batch {batch}: {speedup:.2f}x")
    click.echo(f"wrote {run.output}, {run.report_json}, {run.report_md}")
    for warning in rep.get("warnings", []):
        click.echo(f"agmc-onnx: warning: {warning}", err=True)
