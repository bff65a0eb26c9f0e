"""Click options shared by `prune` and `finetune` (the CI gates), and the rendering of a prune run's end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from agmc_onnx.errors import InputError
from agmc_onnx.report import Gates

GATE_OPTIONS = ("min_accuracy", "max_accuracy_drop", "min_speedup", "max_latency_ms", "min_fidelity")


class BatchList(click.ParamType):
    """'1,64' -> (1, 64): comma-separated positive integers (click names the flag when one is not)."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            batches = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            batches = ()
        if not batches or any(b < 1 for b in batches):
            self.fail(f"expected comma-separated positive integers, got {value!r}", param, ctx)
        return batches


BATCHES = BatchList()


def _stacked(func: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    """`func` decorated with `options`, the first listed shown first in --help."""
    for option in reversed(options):
        func = option(func)
    return func


def gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --min-accuracy, --max-accuracy-drop, --min-speedup and --max-latency-ms to a command."""
    options = [
        click.option("--min-accuracy", type=float, default=None,
                     help="Gate: final test accuracy at least this many percent (e.g. 91.5)."),
        click.option("--max-accuracy-drop", type=float, default=None,
                     help="Gate: accuracy at most this many points below the original's."),
        click.option("--min-speedup", type=float, default=None,
                     help="Gate: measured ORT speed-up vs the original at least this, at every --bench-batch."),
        click.option("--max-latency-ms", type=float, default=None,
                     help="Gate: median latency of the result at most this, at every --bench-batch."),
        click.option("--min-fidelity", type=float, default=None,
                     help="Gate: the result's fidelity to the original's outputs at least this many percent "
                          "(e.g. 97; works without labels)."),
    ]  # fmt: skip
    return _stacked(func, options)


PREPROCESS_OPTIONS = ("scale", "mean", "std", "layout", "resize", "channel_order")


def input_shape_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --input-shape NAME:D0,D1,... (repeatable): the size a file with dynamic input sizes is analysed at."""
    return click.option(
        "--input-shape", "input_shape", multiple=True, metavar="NAME:D0,D1,...",
        help="Input size to analyse, count and benchmark a file with dynamic sizes at, e.g. images:1,3,640,640 "
             "(repeatable, one per input; the batch axis stays symbolic; default: the size the exporter "
             "recorded, e.g. Ultralytics' imgsz). The written file keeps the original's dynamic sizes.",
    )(func)  # fmt: skip


def input_shapes_from(kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """Pop --input-shape out of a command's kwargs, parsed by input name ('' for an unnamed one)."""
    from agmc_onnx.inputs import parse_input_shapes

    return parse_input_shapes(kwargs.pop("input_shape", ()) or None)


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """'0.485,0.456,0.406' -> floats; one value or one per channel."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected one or three comma-separated numbers, got {value!r}") from None


def preprocess_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the preprocessing flags (they win over a sidecar and over what the model file records)."""
    options = [
        click.option("--scale", type=str, default=None,
                     help="Pixel scale before mean/std, e.g. 1/255 (default: 1/255 for 8-bit images, 1 for float)."),
        click.option("--mean", type=str, default=None, callback=_floats,
                     help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406."),
        click.option("--std", type=str, default=None, callback=_floats,
                     help="Per-channel std divided by after the mean, e.g. 0.229,0.224,0.225."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False), default=None,
                     help="Input layout (default: from the model's input shape)."),
        click.option("--resize", type=click.Choice(["resize", "pad", "letterbox"]), default=None,
                     help="Fit images to the input size by resizing, by centre pad/crop, or letterbox (YOLO's: "
                          "aspect ratio kept, grey 114 padding; the default for Ultralytics exports)."),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"], case_sensitive=False), default=None,
                     help="Channel order of 3-channel input (default rgb; --mean/--std are in this order)."),
        click.option("--sidecar", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Preprocessing sidecar (JSON/YAML) to use instead of MODEL.preprocess.json."),
    ]  # fmt: skip
    return _stacked(func, options)


def preprocess_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the preprocessing flags out of a command's kwargs (None: not given)."""
    return {name: kwargs.pop(name, None) for name in PREPROCESS_OPTIONS}


def gates_from(kwargs: dict[str, Any]) -> Gates:
    """Pop the gate options out of a command's kwargs into a Gates."""
    return Gates(**{name: kwargs.pop(name, None) for name in GATE_OPTIONS})


def distill_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the distillation recipe options shared by `prune --finetune-epochs` and `finetune`."""
    options = [
        click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Distillation softmax temperature for class-score outputs (default 1: Hinton's 4 "
                          "recovered less in short fine-tuning, benchmarks/label_free.md)."),
        click.option("--color-jitter", type=click.FloatRange(min=0), default=None,
                     help="Image augmentation: random contrast x(1 +- C) and brightness +- C std (default 0: off)."),
        click.option("--distill-features", type=click.IntRange(min=0), default=None,
                     help="Also distil N intermediate feature maps (the deepest stage ends both models name "
                          "alike, through a learned 1x1 projection); default 0: outputs only."),
        click.option("--feature-weight", type=click.FloatRange(min=0), default=None,
                     help="Weight of --distill-features' loss beside the outputs' (default 1; 0.1 where 1 hurt, "
                          "benchmarks/label_free.md)."),
    ]  # fmt: skip
    return _stacked(func, options)


def distill_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The distillation recipe flags that were given (pops them), as FinetuneConfig keywords; a feature weight
    without feature maps to weigh is refused."""
    given = {"temperature": kwargs.pop("temperature", None), "color": kwargs.pop("color_jitter", None),
             "feature_points": kwargs.pop("distill_features", None),
             "feature_weight": kwargs.pop("feature_weight", None)}
    if given["feature_weight"] is not None and not given["feature_points"]:
        raise InputError("--feature-weight weighs the feature-map loss: give --distill-features N too")
    return {k: v for k, v in given.items() if v is not None}


def prune_run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the fine-tune, latency and gate options of `prune`."""
    options = [
        click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Fine-tune the pruned model for N epochs on --data (written to the output)."),
        click.option("--distill", is_flag=True,
                     help="Distil from the original model while fine-tuning (always, alone, when the data has no labels)."),
        click.option("--augment/--no-augment", default=True, show_default=True,
                     help="Fine-tuning augmentations for image inputs: crop + flip (+ --color-jitter)."),
        click.option("--bench/--no-bench", "do_bench", default=True, show_default=True,
                     help="Measure original vs pruned latency in ONNX Runtime (interleaved)."),
        click.option("--bench-batch", type=BATCHES, default="1", show_default=True,
                     help="Batch sizes for latency, e.g. 1,64."),
        click.option("--bench-repeats", type=click.IntRange(min=1), default=30, show_default=True),
        click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="ORT intra-op threads."),
        click.option("--target-latency", type=float, default=None,
                     help="Budget: latency of the result at most MS milliseconds (planned on measured tables, then "
                          "checked by measurement: --latency-rounds)."),
        click.option("--target-speedup", type=float, default=None,
                     help="Budget: speed-up over the original at least X (planned on measured tables, then checked "
                          "by measurement: --latency-rounds)."),
        click.option("--batch", "latency_batch", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Batch size the latency budget is for."),
        click.option("--latency-cache", type=click.Path(file_okay=False), default=None,
                     help="Latency table cache (default ~/.cache/agmc-onnx/latency)."),
        click.option("--latency-rounds", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Under a latency budget: measure the result against the original and, while it misses "
                          "the budget, shrink it to a corrected limit, at most N times (0: trust the prediction)."),
    ]  # fmt: skip
    return distill_options(input_shape_option(preprocess_options(gate_options(_stacked(func, options)))))


def render_run(report: dict[str, Any]) -> None:
    """After the cut: the accuracies, measured speed-ups, latency checks and where the report went."""
    for stage, facts in report["models"].items():
        acc, fid = facts.get("accuracy"), facts.get("fidelity")
        if acc is not None or fid is not None:
            shown = [] if acc is None else [f"test accuracy {100 * acc:.2f}%"]
            shown += [] if fid is None else [f"fidelity {100 * fid:.2f}%"]
            click.echo(f"{stage:10s} {'  '.join(shown)}")
    for batch, speedup in (report.get("speedup") or {}).items():
        kept = "" if report.get("macs_ratio") is None else f" (MACs kept {100 * report['macs_ratio']:.1f}%)"
        click.echo(f"measured speed-up at batch {batch}: {speedup:.2f}x{kept}")
    lb = report.get("latency_budget")
    refine = (lb or {}).get("refine")  # the verification section carries the prune report's rounds
    if refine:
        steps = ", ".join(f"{r['original_ms'] / r['measured_ms']:.2f}x" for r in refine["rounds"])
        click.echo(f"latency refinement: measured speed-up per round {steps} "
                   f"({'met' if refine['met'] else 'NOT met'})")  # fmt: skip
    if lb and lb.get("measured"):
        m = lb["measured"]
        click.echo(f"latency at batch {lb['batch']}: predicted {lb['predicted_ms']:.3f} ms, measured {m['pruned_ms']:.3f} ms "
                   f"({100 * m['error']:+.1f}%), budget {'met' if m['met'] else 'NOT met'} when measured")
    click.echo(f"report: {', '.join(report['report_paths'])}")
