"""agmc_onnx.latency.verification: predicted against measured for the report."""

from __future__ import annotations

import pytest

from agmc_onnx.latency import verification


def test_verification_reports_predicted_vs_measured() -> None:
    section = {"batch": 1, "predicted_ms": 1.0, "predicted_original_ms": 2.0, "target_speedup": 2.0,
               "target_latency_ms": None}  # fmt: skip
    lat = {"results": [{"model": "original", "batch": 1, "median_ms": 2.2}, {"model": "pruned", "batch": 1, "median_ms": 1.25},
                       {"model": "pruned", "batch": 64, "median_ms": 9.0}]}  # fmt: skip
    out = verification(section, lat)["measured"]
    assert out["pruned_ms"] == 1.25 and out["error"] == pytest.approx(-0.2)
    assert out["speedup"] == pytest.approx(2.2 / 1.25) and out["met"] is False
    assert verification(section, None)["measured"] is None
