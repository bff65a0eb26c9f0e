"""Fixtures the rl tests share: the tiny Flatten->Gemm net and its search data (tests/rl/recording.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.rl.recording import fixture_data, fixture_net


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded searches' fixture net, exported once per test module."""
    return fixture_net(tmp_path_factory.mktemp("rl"))


@pytest.fixture(scope="module")
def data(net: Path) -> Any:
    """200 reward, 128 calibration and 300 test images of the shipped data for `net`."""
    return fixture_data(net)
