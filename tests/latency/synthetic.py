"""A deterministic synthetic runtime for latency tests: a model takes 1 ns per MAC plus 10 us per run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from agmc_onnx.analysis import Analysis
from agmc_onnx.cost import count_macs
from agmc_onnx.plan import round_count

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"
NS_PER_MAC = 1e-9  # synthetic: 1 ns per MAC, plus a fixed per-run overhead
OVERHEAD_S = 1e-5


class FakeClock:
    """A clock that only moves when a synthetic runner 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def synthetic(clock: FakeClock, calls: list[int] | None = None) -> Callable[[onnx.ModelProto, Any], Callable[[], None]]:
    """Runner factory: a model 'takes' its MACs x 1 ns + 10 us per run (deterministic)."""

    def make(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        if calls is not None:
            calls.append(1)
        cost = count_macs(proto) * NS_PER_MAC + OVERHEAD_S

        def run() -> None:
            clock.now += cost

        return run

    return make


def truth_ms(proto: onnx.ModelProto) -> float:
    """What the synthetic runner measures for a model, in ms."""
    return 1000 * (count_macs(proto) * NS_PER_MAC + OVERHEAD_S)


def random_counts(a: Analysis, rng: np.random.Generator, round_to: int = 16) -> dict[int, int]:
    return {g.id: round_count(rng.uniform(0.05, 1.0) * g.size, g.size, round_to) for g in a.prunable_groups()}
