"""Closing the loop on a latency budget: measure the pruned model against the original and, where it
misses the budget, shrink the plan to a limit corrected by the measured/predicted ratio; repeat.

The latency tables predict speed-ups within a few percent (benchmarks/latency_aware.md), so a plan
solved to exactly the predicted budget misses a measured target about half of the time. Each round
here times the original and the candidate in one interleaved run; if the candidate is too slow, the
predicted-ms limit is scaled by predicted/measured of the candidate (so the next plan is solved in
the predictor's units for the measured requirement) and the plan is shrunk greedily: one rounding
step at a time from the group whose step saves the most predicted latency per unit of importance
lost (NetAdapt's trade, with magnitude importance standing in for accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agmc_onnx.budget import required_ms
from agmc_onnx.latency.measure import ort_runner_factory
from agmc_onnx.plan import ImportanceCache, Plan, RoundTo, group_step

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.budget import Budget
    from agmc_onnx.latency.tables import LatencyModel

MeasureFn = Callable[[Plan], tuple[float, float]]  # plan -> (original ms, pruned ms) from one interleaved run


@dataclass
class RefineRound:
    """One measurement: the plan's predicted and measured latency against the measured original."""

    round: int
    predicted_ms: float
    measured_ms: float
    original_ms: float
    required_ms: float
    limit_ms: float  # the predicted-ms limit the measured plan was solved for
    macs_ratio: float
    met: bool


@dataclass
class Refinement:
    """The plan to write and every round that led to it."""

    plan: Plan
    rounds: list[RefineRound]
    met: bool
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary for the report."""
        return {"met": self.met, "note": self.note, "rounds": [asdict(r) for r in self.rounds]}


def _next_count(k: int, step: int) -> int | None:
    """The next smaller width on the group's grid (multiples of the step), None when at the bottom."""
    lower = ((k - 1) // step) * step
    return lower if lower >= step else None


def _top(chans: list[int], scores: np.ndarray, k: int) -> list[int]:
    """The k channels of `chans` with the highest importance, sorted by index."""
    return sorted(sorted(chans, key=lambda c: -scores[c])[:k])


def shrink_plan(analysis: Analysis, plan: Plan, predict: Callable[[Mapping[int, int]], float], limit_ms: float,
                round_to: RoundTo, cache: ImportanceCache, score: Callable[[Plan], float] | None = None,
                candidates: int = 6) -> Plan | None:  # fmt: skip
    """Drop channels from `plan` until the predicted latency is <= `limit_ms`; None if it cannot get there.

    Each move takes one rounding step off one group: the move with the most predicted ms saved per
    unit of (normalised) importance removed or, given `score` (a plan's accuracy, e.g. the search's
    evaluator), the one of the `candidates` best such moves that loses the least score per ms saved
    (NetAdapt's choice, on measured accuracy). The removed channels are the least important of those
    the plan keeps, so the result keeps a subset of the plan's channels.
    """
    groups = {g.id: g for g in analysis.prunable_groups()}
    kept = {gid: list(plan.kept.get(gid, range(g.size))) for gid, g in groups.items()}
    scores = {gid: np.asarray(cache.scores(gid), dtype=np.float64) for gid in groups}
    totals = {gid: max(float(s.sum()), 1e-12) for gid, s in scores.items()}
    counts = {gid: len(k) for gid, k in kept.items()}

    current = predict(counts)
    accuracy = score(_as_plan(analysis, kept, cache)) if score is not None and current > limit_ms else None
    while current > limit_ms:
        moves: list[tuple[float, float, int, int]] = []  # (value, ms saved, group, new count)
        for gid, g in groups.items():
            k2 = _next_count(counts[gid], group_step(g.size, round_to))
            if k2 is None:
                continue
            saved = current - predict({**counts, gid: k2})
            if saved <= 0:
                continue
            ranked = sorted(kept[gid], key=lambda c, s=scores[gid]: s[c])  # least important first
            lost = float(scores[gid][ranked[: counts[gid] - k2]].sum()) / totals[gid]
            moves.append((saved / max(lost, 1e-9), saved, gid, k2))
        if not moves:
            return None
        moves.sort(key=lambda m: -m[0])
        _, _, gid, k2 = moves[0]
        if score is not None and accuracy is not None:
            trials = []
            for _, saved, g_id, k in moves[:candidates]:
                acc = score(_as_plan(analysis, {**kept, g_id: _top(kept[g_id], scores[g_id], k)}, cache))
                trials.append(((accuracy - acc) / saved, -acc, g_id, k, acc))
            _, _, gid, k2, accuracy = min(trials)
        kept[gid] = _top(kept[gid], scores[gid], k2)
        counts[gid] = k2
        current = predict(counts)
    _fill_back(groups, kept, counts, scores, plan, predict, limit_ms, round_to)
    return _as_plan(analysis, kept, cache)


def _as_plan(analysis: Analysis, kept: Mapping[int, list[int]], cache: ImportanceCache) -> Plan:
    """A Plan of these kept channels; a tensor holding part of a group keeps at least one of its channels."""
    out = {gid: list(k) for gid, k in kept.items()}
    for gid, chans in analysis.partial_sets():
        if gid in out and not chans.intersection(out[gid]):
            out[gid] = sorted(out[gid] + [next(int(c) for c in cache.order(gid) if int(c) in chans)])
    return Plan(out)


def _fill_back(groups: Mapping[int, Any], kept: dict[int, list[int]], counts: dict[int, int],
               scores: Mapping[int, np.ndarray], plan: Plan, predict: Callable[[Mapping[int, int]], float],
               limit_ms: float, round_to: RoundTo) -> None:  # fmt: skip
    """Give back removed steps that still fit under the limit (the greedy's last move may overshoot).

    Candidates are the plan's own channels only, most importance regained per predicted ms first.
    """
    while True:
        current = predict(counts)
        best: tuple[float, int, list[int]] | None = None
        for gid, g in groups.items():
            original = list(plan.kept.get(gid, range(g.size)))
            if counts[gid] >= len(original):
                continue
            step = group_step(g.size, round_to)
            k2 = min(len(original), (counts[gid] // step + 1) * step)
            cost = predict({**counts, gid: k2}) - current
            if current + cost > limit_ms:
                continue
            ranked = _top(original, scores[gid], k2)
            gain = float(scores[gid][sorted(set(ranked) - set(kept[gid]))].sum())
            value = gain / max(cost, 1e-9)
            if best is None or value > best[0]:
                best = (value, gid, ranked)
        if best is None:
            return
        _, gid, ranked = best
        kept[gid] = ranked
        counts[gid] = len(ranked)


def refine_plan(analysis: Analysis, plan: Plan, model: LatencyModel, budget: Budget, measure: MeasureFn,
                round_to: RoundTo, cache: ImportanceCache, rounds: int = 2, margin: float = 0.01,
                score: Callable[[Plan], float] | None = None) -> Refinement:  # fmt: skip
    """Measure `plan`; while it misses the budget and rounds remain, shrink it to a corrected limit.

    `margin` asks the corrected limit for that much headroom (the measurement itself is noisy);
    `score` (a plan's accuracy) makes the shrinking accuracy-aware (see shrink_plan).
    The plan written is the last one measured; `met` says whether its measurement met the budget.
    """
    history: list[RefineRound] = []
    limit = model.limit_ms(budget)
    if limit is None:
        raise ValueError("the budget sets no latency")
    current = plan
    for r in range(rounds + 1):
        original_ms, pruned_ms = measure(current)
        need = required_ms(budget, original_ms)
        pred = model.predict_plan(current)
        met = pruned_ms <= need
        history.append(RefineRound(r, pred, pruned_ms, original_ms, need, limit,
                                   analysis.cost.plan_macs(current) / analysis.cost.total_macs, met))  # fmt: skip
        if met:
            return Refinement(current, history, True)
        if r == rounds:
            break
        limit = min(limit, need * pred / pruned_ms * (1.0 - margin))
        smaller = shrink_plan(analysis, current, model.predict, limit, round_to, cache, score)
        if smaller is None:
            return Refinement(current, history, False, "the plan cannot shrink to the corrected limit "
                              f"({limit:.3f} ms predicted): every group is at its smallest width")  # fmt: skip
        current = smaller
    return Refinement(current, history, False, f"budget still missed after {rounds} refinement rounds")


def ort_measure(analysis: Analysis, batch: int, provider: str = "cpu", threads: int | None = None,
                repeats: int = 30, warmup: int = 3) -> MeasureFn:  # fmt: skip
    """A MeasureFn timing the original and the pruned plan interleaved in ONNX Runtime (medians, ms).

    Each model runs in bench.SESSIONS sessions, its fastest counts (bench.measure_sessions).
    """
    from agmc_onnx.bench import SESSIONS, make_inputs, measure_sessions
    from agmc_onnx.surgery import prune

    make = ort_runner_factory(provider, threads)
    original = analysis.model.proto
    feeds = make_inputs(original, batch, input_shapes=analysis.model.input_shapes)
    base = [make(original, feeds) for _ in range(SESSIONS)]

    def run(plan: Plan) -> tuple[float, float]:
        proto = prune(analysis, plan)
        pfeeds = make_inputs(proto, batch, input_shapes=analysis.model.input_shapes)
        samples = measure_sessions([base, [make(proto, pfeeds) for _ in range(SESSIONS)]], warmup, repeats)
        return float(np.median(samples[0])), float(np.median(samples[1]))

    return run
