"""Cost model: predicted MACs/params equal what the written file counts; calls are cheap."""

from __future__ import annotations

import time

import pytest

from agmc_onnx.cost import count_macs, count_params
from agmc_onnx.plan import plan_from_ratios
from agmc_onnx.surgery import prune
from tests.conftest import NETS, random_plan


@pytest.mark.parametrize("name", list(NETS))
def test_totals_match_counted(analyses: dict, name: str) -> None:
    """Original totals equal the independent count of the analysed graph."""
    a = analyses[name]
    assert a.cost.total_macs == count_macs(a.model.proto) > 0
    assert a.cost.total_params == count_params(a.model.proto)


@pytest.mark.parametrize("name", list(NETS))
def test_prediction_equals_written_file(analyses: dict, name: str) -> None:
    """Oracle 3: predicted MACs and params (from counts and from the plan) equal the pruned file's."""
    a = analyses[name]
    for seed in range(3):
        plan = random_plan(a, seed)
        out = prune(a, plan)
        assert a.cost.plan_macs(plan) == count_macs(out)
        assert a.cost.plan_params(plan) == count_params(out)
        if a.cost.counts_exact:
            assert a.cost.macs(plan.keep_counts()) == count_macs(out)
            assert a.cost.params(plan.keep_counts()) == count_params(out)


def test_fewer_channels_fewer_macs(analyses: dict) -> None:
    """MACs drop monotonically with the keep ratio, and every prunable group matters."""
    a = analyses["residual"]
    prev = a.cost.total_macs
    for r in (0.9, 0.7, 0.5, 0.3):
        plan = plan_from_ratios(a, {g.id: r for g in a.prunable_groups()}, round_to=1)
        now = a.cost.plan_macs(plan)
        assert now <= prev
        prev = now
    for g in a.prunable_groups():
        assert a.cost.macs({g.id: 1}) < a.cost.total_macs


def test_macs_call_is_cheap(analyses: dict) -> None:
    """The search calls macs() at every step: thousands of calls per second on a small net."""
    a = analyses["dense"]
    keep = {g.id: max(1, g.size // 2) for g in a.prunable_groups()}
    t = time.perf_counter()
    for _ in range(2000):
        a.cost.macs(keep)
    assert time.perf_counter() - t < 2.0
