"""agmc_onnx.latency.calibrate: the whole-model fit survives slow sessions and wild points."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.cost import count_macs
from agmc_onnx.latency import build_latency_model
from agmc_onnx.plan import ImportanceCache, plan_from_counts
from agmc_onnx.surgery import prune
from tests.latency.synthetic import FakeClock, random_counts, synthetic, truth_ms


@pytest.mark.parametrize("slow_sessions", [1, 3])
def test_calibration_survives_slow_sessions_of_the_original(r20: Analysis, tmp_path: Path, slow_sessions: int) -> None:
    """The original's first session(s) run 30x slow: one slow session is ignored (fastest counts); with
    every session slow the robust line follows the other calibration plans, so predictions stay exact."""
    clock, full, made = FakeClock(), count_macs(r20.model.proto), []
    base = synthetic(clock)

    def make(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        run = base(proto, feeds)
        if count_macs(proto) != full or len(made) >= slow_sessions:
            return run
        made.append(1)

        def slow() -> None:
            for _ in range(30):
                run()

        return slow

    lm = build_latency_model(r20, 1, round_to=16, cache_dir=tmp_path, timer=clock, runner_factory=make,
                             machine="test-cpu", warmup=1, repeats=3)  # fmt: skip
    assert len(made) == slow_sessions
    rng = np.random.default_rng(1)
    slow = 1 if slow_sessions == 1 else 30
    assert lm.table.base_ms == pytest.approx(slow * truth_ms(r20.model.proto), rel=1e-6)
    assert lm.predict({}) == pytest.approx(truth_ms(r20.model.proto), rel=1e-6)
    cache = ImportanceCache(r20)
    for _ in range(3):
        plan = plan_from_counts(r20, random_counts(r20, rng), cache)
        assert lm.predict_plan(plan) == pytest.approx(truth_ms(prune(r20, plan)), rel=1e-6)


def test_robust_line_ignores_one_wild_point_and_falls_back_through_the_origin() -> None:
    from agmc_onnx.latency.calibrate import _robust_line

    x = np.array([4.0, 2.0, 1.0, 2.5, 3.0, 1.5])
    y = 0.9 * x + 0.1
    y[0] = 30.0  # the original measured in a stuck session
    assert _robust_line(x, y) == pytest.approx((0.9, 0.1))
    assert _robust_line(np.array([1.0, 1.0]), np.array([2.0, 3.0])) == pytest.approx((2.5, 0.0))  # one distinct x
    assert _robust_line(np.array([1.0, 2.0, 3.0]), np.array([1.0, 50.0, 100.0]))[1] == 0.0  # slope 49: rejected
