"""The latency a budget sets: target checks, the limit against an original's latency, the measured requirement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agmc_onnx.errors import InputError

if TYPE_CHECKING:
    from agmc_onnx.strategies.base import Budget


def check_latency(value: Any) -> float:
    """A latency target must be a positive number of milliseconds."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--target-latency must be a positive number of ms, got {value!r}") from exc
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"--target-latency must be a positive number of ms, got {value}")
    return v


def check_speedup(value: Any) -> float:
    """A speed-up target must be a number >= 1."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--target-speedup must be a number >= 1, got {value!r}") from exc
    if not np.isfinite(v) or v < 1:
        raise InputError(f"--target-speedup must be a number >= 1, got {value}")
    return v


def budget_limit_ms(budget: Budget, original_ms: float) -> float | None:
    """The latency a budget allows (ms), given the original's: the tighter of latency_ms and original / speedup.

    In the predictor's units with the predicted original (LatencyModel.limit_ms), in measured units
    with a measured one (refine.py); None when the budget sets no latency.
    """
    limits = []
    if budget.latency_ms is not None:
        limits.append(check_latency(budget.latency_ms))
    if budget.speedup is not None:
        limits.append(original_ms / check_speedup(budget.speedup))
    return min(limits) if limits else None


def required_ms(budget: Budget, original_ms: float) -> float:
    """The measured latency the budget asks for, given the original's measured latency."""
    need = budget_limit_ms(budget, original_ms)
    if need is None:
        raise ValueError("the budget sets no latency")
    return need
