"""agmc_onnx.latency.refine: measured misses shrink the plan until the measurement meets the budget."""

from __future__ import annotations

from typing import Any

import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import prune_model
from agmc_onnx.latency.refine import refine_plan, shrink_plan
from agmc_onnx.plan import ImportanceCache, Plan, group_step
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
from agmc_onnx.surgery import prune
from tests.latency.synthetic import MODELS, truth_ms


def pessimist(a: Analysis, factor: float, calls: list[Plan] | None = None) -> Any:
    """A 'runtime' where every pruned model is `factor` times slower than the (exact) predictor says."""
    original = truth_ms(a.model.proto)

    def measure(plan: Plan) -> tuple[float, float]:
        if calls is not None:
            calls.append(plan)
        return original, factor * truth_ms(prune(a, plan))

    return measure


def solved(a: Analysis, lm: Any, speedup: float) -> Plan:
    return REGISTRY["l1-global"]().propose(StrategyContext(a, Budget(speedup=speedup), 16, latency=lm))


def is_subset(small: Plan, big: Plan) -> bool:
    return all(set(small.kept[g]) <= set(big.kept.get(g, small.kept[g])) for g in small.kept)


def test_shrink_reaches_the_limit_with_a_subset_on_the_grid(r20: Analysis, lm20: Any) -> None:
    start = solved(r20, lm20, 1.3)
    limit = 0.8 * lm20.predict_plan(start)
    small = shrink_plan(r20, start, lm20.predict, limit, 16, ImportanceCache(r20))
    assert small is not None and lm20.predict_plan(small) <= limit
    assert is_subset(small, start)
    for g in r20.prunable_groups():
        k = len(small.kept[g.id])
        assert k == g.size or k % group_step(g.size, 16) == 0
    counts = small.keep_counts()
    for g in r20.prunable_groups():  # no slack left: giving any group one step back breaks the limit
        k, full = counts[g.id], len(start.kept[g.id])
        if k < full:
            back = min(full, (k // group_step(g.size, 16) + 1) * group_step(g.size, 16))
            assert lm20.predict({**counts, g.id: back}) > limit
    cache = ImportanceCache(r20)
    for g in r20.prunable_groups():  # the removed channels are the least important of those kept
        dropped = set(start.kept[g.id]) - set(small.kept[g.id])
        if dropped:
            s = cache.scores(g.id)
            assert max(s[c] for c in dropped) <= min(s[c] for c in small.kept[g.id]) + 1e-12


def test_shrink_gives_up_below_the_smallest_widths(r20: Analysis, lm20: Any) -> None:
    assert shrink_plan(r20, solved(r20, lm20, 1.3), lm20.predict, 1e-6, 16, ImportanceCache(r20)) is None


def test_a_plan_that_meets_the_budget_is_measured_once_and_kept(r20: Analysis, lm20: Any) -> None:
    plan, calls = solved(r20, lm20, 1.5), []
    ref = refine_plan(r20, plan, lm20, Budget(speedup=1.5), pessimist(r20, 1.0, calls), 16, ImportanceCache(r20))
    assert ref.met and ref.plan is plan and len(ref.rounds) == 1 and len(calls) == 1


def test_an_optimistic_predictor_is_corrected_until_the_measurement_meets(r20: Analysis, lm20: Any) -> None:
    """The runtime is 15% slower than predicted: the first plan misses 1.5x, the refined one meets it."""
    plan = solved(r20, lm20, 1.5)
    measure = pessimist(r20, 1.15)
    original, first = measure(plan)
    assert original / first < 1.5  # the premise: solved to the prediction, it misses when measured
    ref = refine_plan(r20, plan, lm20, Budget(speedup=1.5), measure, 16, ImportanceCache(r20), rounds=3)
    assert ref.met and ref.note is None
    final = ref.rounds[-1]
    assert final.met and final.original_ms / final.measured_ms >= 1.5
    assert [r.met for r in ref.rounds[:-1]] == [False] * (len(ref.rounds) - 1)
    assert all(b.limit_ms < a.limit_ms for a, b in zip(ref.rounds, ref.rounds[1:], strict=False))  # tighten
    assert is_subset(ref.plan, plan)
    assert final.measured_ms == pytest.approx(1.15 * truth_ms(prune(r20, ref.plan)))


def test_out_of_rounds_or_out_of_channels_says_so(r20: Analysis, lm20: Any) -> None:
    plan = solved(r20, lm20, 1.5)
    ref = refine_plan(r20, plan, lm20, Budget(speedup=1.5), pessimist(r20, 1.15), 16, ImportanceCache(r20), rounds=0)
    assert not ref.met and ref.plan is plan and "after 0 refinement rounds" in (ref.note or "")
    hopeless = refine_plan(r20, plan, lm20, Budget(speedup=1.5), pessimist(r20, 50.0), 16, ImportanceCache(r20))
    assert not hopeless.met and "smallest width" in (hopeless.note or "")


def test_prune_model_reports_the_rounds_and_writes_the_refined_plan(r20: Analysis, lm20: Any) -> None:
    res = prune_model(MODELS / "resnet20.onnx", None, "l1-global", target_speedup=1.5, latency_model=lm20,
                      analysis=r20, latency_rounds=3, latency_measure=pessimist(r20, 1.15))  # fmt: skip
    refine = res.report["latency_budget"]["refine"]
    assert refine["met"] and len(refine["rounds"]) >= 2
    assert res.report["latency_budget"]["predicted_ms"] == pytest.approx(lm20.predict_plan(res.plan))
    assert truth_ms(res.proto) == pytest.approx(truth_ms(prune(r20, res.plan)))
    assert truth_ms(r20.model.proto) / (1.15 * truth_ms(res.proto)) >= 1.5
    plain = prune_model(MODELS / "resnet20.onnx", None, "l1-global", target_speedup=1.5, latency_model=lm20,
                        analysis=r20)  # fmt: skip
    assert plain.report["latency_budget"]["refine"] is None


def test_a_score_steers_the_shrinking_away_from_a_precious_group(r20: Analysis, lm20: Any) -> None:
    """Magnitude alone cuts group P; a score that punishes cutting P makes the shrink cut elsewhere."""
    start = solved(r20, lm20, 1.3)
    limit = 0.9 * lm20.predict_plan(start)
    blind = shrink_plan(r20, start, lm20.predict, limit, 16, ImportanceCache(r20))
    assert blind is not None
    cut = [g for g in blind.kept if len(blind.kept[g]) < len(start.kept[g])]
    assert cut
    precious = cut[0]
    calls: list[Plan] = []

    def score(plan: Plan) -> float:
        calls.append(plan)
        lost = {g: 1 - len(plan.kept[g]) / len(start.kept[g]) for g in start.kept}
        return 1.0 - 10 * lost[precious] - 0.01 * sum(lost.values())

    steered = shrink_plan(r20, start, lm20.predict, limit, 16, ImportanceCache(r20), score=score, candidates=50)
    assert steered is not None and lm20.predict_plan(steered) <= limit
    assert len(steered.kept[precious]) == len(start.kept[precious]) and calls
    assert is_subset(steered, start)
