"""Click options shared by `prune` and `finetune`: the CI gates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from agmc_onnx.report import Gates

GATE_OPTIONS = ("min_accuracy", "max_accuracy_drop", "min_speedup", "max_latency_ms")


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
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def gates_from(kwargs: dict[str, Any]) -> Gates:
    """Pop the gate options out of a command's kwargs into a Gates."""
    return Gates(**{name: kwargs.pop(name, None) for name in GATE_OPTIONS})
