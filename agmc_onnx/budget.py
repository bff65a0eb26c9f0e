"""Budgets: what a pruned model may cost (MACs fraction, latency, speed-up), and the checks of their values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from agmc_onnx.errors import InputError


@dataclass
class Budget:
    """What the pruned model may cost, as fractions of the original (None: no constraint)."""

    flops: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None

    @property
    def by_latency(self) -> bool:
        """True when the budget sets a latency (absolute or as a speed-up)."""
        return self.latency_ms is not None or self.speedup is not None


class LatencyPredictor(Protocol):
    """What budgets read of a latency model (agmc_onnx.latency.LatencyModel)."""

    def limit_ms(self, budget: Budget) -> float | None:
        """The latency limit (ms) a budget sets, in the predictor's units."""
        ...


def _number(value: Any, flag: str, what: str) -> float:
    """`value` as a float, or an InputError naming the flag."""
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{flag} must be {what}, got {value!r}") from exc


def check_target(flops: float | None, what: str = "--target-flops") -> float:
    """A MACs target must be a number in (0, 1]."""
    if flops is None:
        raise InputError(f"{what} is required for this strategy")
    value = _number(flops, what, "a number in (0, 1]")
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise InputError(f"{what} must be in (0, 1], got {flops}")
    return value


def check_latency(value: Any) -> float:
    """A latency target must be a positive number of milliseconds."""
    v = _number(value, "--target-latency", "a positive number of ms")
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"--target-latency must be a positive number of ms, got {value}")
    return v


def check_speedup(value: Any) -> float:
    """A speed-up target must be a number >= 1."""
    v = _number(value, "--target-speedup", "a number >= 1")
    if not math.isfinite(v) or v < 1:
        raise InputError(f"--target-speedup must be a number >= 1, got {value}")
    return v


def budget_limit_ms(budget: Budget, original_ms: float) -> float | None:
    """The latency a budget allows (ms), given the original's: the tighter of latency_ms and original / speedup.

    In the predictor's units with the predicted original (LatencyModel.limit_ms), in measured units
    with a measured one (latency refinement); None when the budget sets no latency.
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


def latency_limit(budget: Budget, latency: LatencyPredictor | None, path: str | None = None) -> float | None:
    """The latency limit (ms) of a budget, None without a latency or speed-up target."""
    if not budget.by_latency:
        return None
    if latency is None:
        raise InputError("a latency or speed-up budget needs a latency model (agmc_onnx.latency)", path)
    return latency.limit_ms(budget)


def macs_target(budget: Budget, limit_ms: float | None) -> float | None:
    """The checked MACs fraction a plan must meet: required unless a latency limit stands alone."""
    return check_target(budget.flops) if limit_ms is None or budget.flops is not None else None
