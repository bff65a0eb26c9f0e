"""ResNet-20 analysed and its latency model on the synthetic runtime (module fixtures of the latency tests)."""

from __future__ import annotations

from typing import Any

import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import analyze
from agmc_onnx.latency import build_latency_model
from tests.latency.synthetic import MODELS, FakeClock, synthetic


@pytest.fixture(scope="module")
def r20() -> Analysis:
    return analyze(MODELS / "resnet20.onnx")


@pytest.fixture(scope="module")
def lm20(r20: Analysis, tmp_path_factory: pytest.TempPathFactory) -> Any:
    clock = FakeClock()
    return build_latency_model(r20, 1, round_to=16, cache_dir=tmp_path_factory.mktemp("cache"), timer=clock,
                               runner_factory=synthetic(clock), machine="test-cpu", warmup=1, repeats=3)  # fmt: skip
