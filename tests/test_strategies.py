"""Strategies: uniform and l1-global meet the MACs target within 1%, rounding holds, plans round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.errors import InputError
from agmc_onnx.importance import scores
from agmc_onnx.plan import Plan, group_step, parse_round_to, plan_from_ratios, round_count
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
from agmc_onnx.surgery import prune
from tests.conftest import check_plan


def _propose(a: object, strategy: str, target: float | None = None, round_to: int | str = 1, **opts: object) -> Plan:
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
    assert parse_round_to("auto") in ("auto:8", "auto:16") and parse_round_to("4") == 4
    assert parse_round_to("AUTO:16") == "auto:16" and parse_round_to(16) == 16
    for bad in ("0", "auto:12", "auto:", "auto:x", "16x"):
        with pytest.raises(InputError):
            parse_round_to(bad)


@pytest.mark.parametrize(
    ("block", "steps"),
    [(16, {8: 4, 16: 4, 24: 4, 32: 8, 48: 8, 64: 16, 96: 16, 512: 16}),
     (8, {8: 4, 16: 4, 24: 4, 32: 8, 64: 8, 512: 8})],
)
def test_auto_steps_per_width(block: int, steps: dict[int, int]) -> None:
    """auto: the block for wide groups, a smaller power of two (>= 4) so each group keeps >= 4 widths."""
    for size, step in steps.items():
        assert group_step(size, f"auto:{block}") == step
        widths = {round_count(k, size, f"auto:{block}") for k in range(1, size + 1)}
        assert widths == {*range(step, size + 1, step), size}
        assert len(widths) >= 4 or step == 4


@pytest.mark.parametrize("n", [1, 4, 8, 16])
def test_explicit_round_to_is_exact(n: int) -> None:
    """An explicit N is the step of every group, narrow or wide."""
    for size in (8, 16, 32, 64, 512):
        assert group_step(size, n) == n
        assert round_count(0, size, n) == min(n, size)


@pytest.fixture(scope="module")
def r20() -> object:
    """The shipped ResNet-20 (groups of 16, 32 and 64 channels)."""
    from agmc_onnx.api import analyze

    return analyze(Path(__file__).resolve().parents[1] / "fixtures" / "models" / "resnet20.onnx")


@pytest.mark.parametrize("strategy", ["uniform", "l1-global"])
@pytest.mark.parametrize("round_to", ["auto:16", "auto:8", 16])
def test_resnet20_auto_steps_meet_target(r20: object, strategy: str, round_to: int | str) -> None:
    """On ResNet-20 per-group steps hold, every group can be pruned under auto, and MACs land within 1%."""
    from agmc_onnx.cost import count_macs

    plan = _propose(r20, strategy, 0.5, round_to=round_to)
    for g in r20.prunable_groups():
        k, step = len(plan.kept[g.id]), group_step(g.size, round_to)
        assert k % step == 0 or k == g.size
        if isinstance(round_to, str):
            assert g.size // step >= 4  # ResNet-20 widths are 16/32/64: four widths each
    out = prune(r20, plan)
    got = count_macs(out) / r20.cost.total_macs
    assert abs(got - 0.5) <= 0.01 or round_to == 16 and got <= 0.5


def test_report_records_round_steps(tmp_path: Path) -> None:
    """The report keeps --round-to as resolved and each prunable group's step."""
    from agmc_onnx.api import prune_model

    model = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "resnet20.onnx"
    rep = prune_model(model, 0.5, "uniform", round_to="auto:16").report
    assert rep["round_to"] == "auto:16"
    steps = {g["size"]: g["round_step"] for g in rep["groups"] if g["prunable"]}
    assert steps == {16: 4, 32: 8, 64: 16}
    rep = prune_model(model, 0.5, "uniform", round_to=8).report
    assert {g["round_step"] for g in rep["groups"] if g["prunable"]} == {8}


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
