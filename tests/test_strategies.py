"""Strategies: uniform and l1-global meet the MACs target within 1%, rounding holds, plans round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.errors import InputError
from agmc_onnx.importance import scores
from agmc_onnx.plan import Plan, parse_round_to, plan_from_ratios, round_count
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
from agmc_onnx.surgery import prune
from tests.conftest import check_plan


def _propose(a: object, strategy: str, target: float | None = None, round_to: int = 1, **opts: object) -> Plan:
    """Run one strategy."""
    ctx = StrategyContext(analysis=a, budget=Budget(flops=target), round_to=round_to, options=dict(opts))
    return REGISTRY[strategy]().propose(ctx)


@pytest.mark.parametrize("strategy", ["uniform", "l1-global"])
@pytest.mark.parametrize("name", ["residual", "dense", "flatten.folded"])
@pytest.mark.parametrize("target", [0.5, 0.3])
def test_target_within_one_percent(analyses: dict, strategy: str, name: str, target: float) -> None:
    """Pruned MACs land within 1% of the target and the oracles hold."""
    a = analyses[name]
    plan = _propose(a, strategy, target)
    out = check_plan(a, plan)
    from agmc_onnx.cost import count_macs

    assert abs(count_macs(out) / a.cost.total_macs - target) <= 0.01


def test_uniform_ratio_is_uniform(analyses: dict) -> None:
    """Uniform keeps about the same fraction of every group."""
    a = analyses["residual"]
    plan = _propose(a, "uniform", 0.5)
    fracs = [len(plan.kept[g.id]) / g.size for g in a.prunable_groups()]
    assert max(fracs) - min(fracs) <= 0.5


@pytest.mark.parametrize("round_to", [2, 4])
def test_rounding(analyses: dict, round_to: int) -> None:
    """Kept counts are multiples of round_to or the full size, never zero."""
    a = analyses["dense"]
    for strategy in ("uniform", "l1-global"):
        plan = _propose(a, strategy, 0.6, round_to=round_to)
        for g in a.prunable_groups():
            k = len(plan.kept[g.id])
            assert k > 0 and (k % round_to == 0 or k == g.size)


def test_round_count() -> None:
    """Rounding rules: multiple of N, at least N, full size when above or when size <= N."""
    assert round_count(0.1, 64, 16) == 16
    assert round_count(40, 64, 16) == 48 or round_count(40, 64, 16) == 32
    assert round_count(63, 64, 16) == 64
    assert round_count(3, 8, 16) == 8
    assert parse_round_to("auto") in (8, 16) and parse_round_to("4") == 4
    with pytest.raises(InputError):
        parse_round_to("0")


def test_unreachable_target(analyses: dict) -> None:
    """A target below the smallest allowed model is an InputError naming the minimum."""
    a = analyses["residual"]
    with pytest.raises(InputError, match="unreachable"):
        _propose(a, "uniform", 0.001, round_to=4)


@pytest.mark.parametrize("bad", [0.0, -1.0, 1.5, float("nan"), None])
def test_bad_target(analyses: dict, bad: float | None) -> None:
    """Targets outside (0, 1] are refused."""
    with pytest.raises(InputError):
        _propose(analyses["residual"], "uniform", bad)


def test_importance_prefers_strong_channels(analyses: dict) -> None:
    """L1 over all members picks the channel whose weights were made large; BN scale ranks by |gamma|."""
    a = analyses["residual"]
    g = a.prunable_groups()[1]
    s = scores(a, g, "l1")
    assert s.shape == (g.size,) and (s > 0).all()
    plan = plan_from_ratios(a, {g.id: 0.5}, round_to=1)
    kept = plan.kept[g.id]
    assert sorted(np.argsort(-s)[: len(kept)].tolist()) == kept
    assert scores(a, g, "bn").shape == (g.size,)
    assert scores(a, g, "l2").shape == (g.size,)


def test_plan_file(analyses: dict, tmp_path: Path) -> None:
    """A JSON plan of ratios and explicit indices is followed exactly; Plan JSON round-trips."""
    a = analyses["residual"]
    g0, g1 = a.prunable_groups()[:2]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({str(g0.id): 0.5, str(g1.id): [0, 2, 3]}))
    plan = _propose(a, "plan", plan=str(path))
    assert len(plan.kept[g0.id]) == g0.size // 2 and plan.kept[g1.id] == [0, 2, 3]
    check_plan(a, plan)
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).kept == plan.kept
    path.write_text(json.dumps({"plan": plan.to_json()}))
    assert _propose(a, "plan", plan=str(path)).kept == plan.kept
    frozen = next(g for g in a.groups if not g.prunable)
    path.write_text(json.dumps({str(frozen.id): 0.5}))
    with pytest.raises(InputError, match="frozen"):
        _propose(a, "plan", plan=str(path))
    path.write_text("{not json")
    with pytest.raises(InputError):
        _propose(a, "plan", plan=str(path))


def test_plan_keep_all_ratio_one(analyses: dict) -> None:
    """Ratio 1.0 keeps everything; the pruned file equals the analysed one in size."""
    a = analyses["dwse"]
    plan = plan_from_ratios(a, {g.id: 1.0 for g in a.prunable_groups()}, round_to=16)
    assert all(len(plan.kept[g.id]) == g.size for g in a.prunable_groups())
    assert prune(a, plan).ByteSize() == pytest.approx(a.model.proto.ByteSize(), rel=0.01)
