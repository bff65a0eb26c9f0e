"""agmc_onnx.latency.tables: bilinear interpolation, and speed-up limits from predictions."""

from __future__ import annotations

from typing import Any

import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.latency import NodeTable
from agmc_onnx.strategies import Budget


def test_node_table_interpolates_bilinearly_and_clamps() -> None:
    t = NodeTable([16, 32, 64], [16, 48], [[1.0, 3.0], [2.0, 6.0], [4.0, 12.0]])
    assert t.at(32, 48) == 6.0  # grid points exact
    assert t.at(24, 16) == pytest.approx(1.5)  # between input widths
    assert t.at(32, 32) == pytest.approx(4.0)  # between output widths
    assert t.at(48, 32) == pytest.approx(6.0)  # both axes: mean of 4 (in=32) and 8 (in=64)
    assert t.at(8, 8) == 1.0 and t.at(128, 96) == 12.0  # clamped outside the grid
    single = NodeTable([3], [16, 32], [[1.0, 2.0]])
    assert single.at(3, 24) == pytest.approx(1.5)


def test_speedup_is_a_ratio_of_predictions_not_of_a_measurement(r20: Analysis, lm20: Any) -> None:
    """The build's measured original (base_ms) may differ from the fit's prediction: a speed-up uses the latter."""
    from dataclasses import replace

    from agmc_onnx.latency import LatencyModel

    drifted = LatencyModel(r20, replace(lm20.table, base_ms=1.3 * lm20.table.base_ms))
    assert drifted.limit_ms(Budget(speedup=2.0)) == pytest.approx(lm20.predict({}) / 2.0)
    assert drifted.limit_ms(Budget(speedup=2.0, latency_ms=0.1 * lm20.predict({}))) == pytest.approx(0.1 * lm20.predict({}))
