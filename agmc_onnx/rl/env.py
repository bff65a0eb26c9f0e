"""The pruning environment: one step per prunable group, actions -> keep counts under AMC's action wall."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from agmc_onnx.errors import InputError
from agmc_onnx.plan import RoundTo, group_step

DYN_FEATURES = 7  # MACs reduced so far, MACs still reducible, previous action, step / steps, target,
# latency reduced so far, latency still reducible (both 0 without a latency budget)


def allowed_counts(size: int, round_to: RoundTo, a_min: float, width: int = 1) -> list[int]:
    """Keep counts a group may take: multiples of its step (plan.group_step; or the full size), at least a_min*size."""
    r = group_step(size, round_to, width)
    counts = sorted({c for c in range(r, size + 1, r)} | {size})
    floor = a_min * size - 1e-9
    above = [c for c in counts if c >= floor]
    return above or [size]


class PruningEnv:
    """Turns keep ratios, one per prunable group in topological order, into keep counts.

    AMC's action wall: each action is clipped into [lo, hi] where `hi` is the largest count that
    still lets the plan meet the MACs target with every later group at its minimum, and `lo` the
    smallest that does not undershoot it with every later group kept whole. The last step thus
    lands on the largest plan at or under the target that the channel granularity allows.

    With a latency budget (`latency` predicts ms for keep counts, `latency_limit` in ms) the wall
    respects every constraint present: `hi` keeps all of them with later groups at their minimum,
    `lo` is the smallest count that reaches at least one with later groups whole, and counts
    inside the wall that would break one (latency tables need not be monotone) are skipped.
    `target=None` means no MACs constraint (latency only).
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        sizes: Sequence[int],
        macs: Callable[[Mapping[int, int]], int],
        total_macs: int,
        target: float | None,
        round_to: RoundTo = 1,
        a_min: float = 0.05,
        latency: Callable[[Mapping[int, int]], float] | None = None,
        latency_limit: float | None = None,
        widths: Sequence[int] | None = None,  # ChannelGroup.class_width per group (heads step by one)
    ) -> None:
        if target is None and latency_limit is None:
            raise InputError("the search needs a FLOPs target, a latency target or both")
        if target is not None and not 0 < target <= 1:
            raise InputError(f"the FLOPs target must be in (0, 1], not {target}")
        if latency_limit is not None and latency is None:
            raise InputError("a latency limit needs a latency predictor")
        self.group_ids = list(group_ids)
        self.sizes = list(sizes)
        self.macs = macs
        self.total = int(total_macs)
        self.use_macs = target is not None
        self.target = float(target) if target is not None else 1.0
        self.limit = self.target * self.total
        self.latency = latency
        self.latency_limit = latency_limit
        self.a_min = a_min
        widths = list(widths) if widths is not None else [1] * len(self.sizes)
        self.counts = [allowed_counts(s, round_to, a_min, w) for s, w in zip(self.sizes, widths, strict=True)]
        self.steps = len(self.group_ids)
        floor_keep = {g: c[0] for g, c in zip(self.group_ids, self.counts, strict=True)}
        self.base_latency = latency({}) if latency is not None else 0.0
        if latency_limit is not None and latency is not None and latency(floor_keep) > latency_limit:
            raise InputError(
                f"the latency target {latency_limit:.4g} ms is out of reach: every prunable group at its minimum "
                f"(keep ratio {a_min:g}, round_to {round_to}) is still predicted at {latency(floor_keep):.4g} ms"
            )
        floor = self.macs(floor_keep)
        if self.use_macs and floor > self.limit + 1e-6:
            raise InputError(
                f"the FLOPs target {target:g} is out of reach: every prunable group at its minimum "
                f"(keep ratio {a_min:g}, round_to {round_to}) still leaves {floor / max(1, self.total):.3f} of the MACs"
            )
        self.reset()

    @classmethod
    def from_analysis(cls, analysis: Any, target: float | None, round_to: RoundTo = 1, a_min: float = 0.05,
                      latency: Any = None, latency_limit: float | None = None) -> PruningEnv:  # fmt: skip
        """The environment over an engine Analysis (its prunable groups, in their listed order).

        `latency` is an agmc_onnx.latency.LatencyModel (its predict() is used), `latency_limit` in ms.
        """
        groups = _prunable(analysis)
        cost = analysis.cost
        macs = cost.macs
        if not getattr(cost, "counts_exact", True):  # MACs depend on WHICH channels: plan them (L1)
            from agmc_onnx.plan import ImportanceCache, plan_from_counts

            cache = ImportanceCache(analysis, "l1")
            macs = lambda keep: cost.plan_macs(plan_from_counts(analysis, keep, cache))  # noqa: E731
        predict = latency.predict if latency is not None else None
        return cls([g.id for g in groups], [g.size for g in groups], macs, cost.total_macs, target, round_to, a_min,
                   predict, latency_limit, [getattr(g, "class_width", 1) for g in groups])  # fmt: skip

    def reset(self) -> np.ndarray:
        """Start an episode; returns the first step's dynamic features."""
        self.t = 0
        self.chosen: dict[int, int] = {}
        self.prev_action = 1.0
        return self.features()

    def _keep(self, t: int, count: int, rest: str) -> dict[int, int]:
        """Counts: decided so far, `count` at step t, later groups at 'min' or 'max'."""
        keep = dict(self.chosen)
        keep[self.group_ids[t]] = count
        for j in range(t + 1, self.steps):
            keep[self.group_ids[j]] = self.counts[j][0] if rest == "min" else self.counts[j][-1]
        return keep

    def ok(self, keep: Mapping[int, int]) -> bool:
        """True when keep counts meet every constraint present (MACs and/or predicted latency)."""
        if self.use_macs and self.macs(keep) > self.limit:
            return False
        return self.latency_limit is None or self.latency(keep) <= self.latency_limit  # type: ignore[misc]

    def reached(self, keep: Mapping[int, int]) -> bool:
        """True when keep counts use up at least one constraint's budget."""
        if self.use_macs and self.macs(keep) >= self.limit:
            return True
        return self.latency_limit is not None and self.latency(keep) >= self.latency_limit  # type: ignore[misc]

    def bounds(self) -> tuple[int, int]:
        """(lo, hi) keep counts for the current step under the action wall."""
        t, options = self.t, self.counts[self.t]
        a, b = 0, len(options) - 1  # hi: largest index meeting every constraint (rest at min)
        if self.ok(self._keep(t, options[b], "min")):
            hi = b
        else:
            while a < b:
                m = (a + b + 1) // 2
                if self.ok(self._keep(t, options[m], "min")):
                    a = m
                else:
                    b = m - 1
            hi = a
        a, b = 0, hi  # lo: smallest index reaching a constraint (rest at max), capped at hi
        while a < b:
            m = (a + b) // 2
            if self.reached(self._keep(t, options[m], "max")):
                b = m
            else:
                a = m + 1
        return options[a], options[hi]

    def features(self) -> np.ndarray:
        """Dynamic state of the current step (AMC's FLOPs reduced / rest, previous action, position, latency)."""
        if self.t >= self.steps:
            lat = [1 - self.latency(self.chosen) / self.base_latency, 0.0] if self._lat_features() else [0.0, 0.0]
            return np.array([1 - self.macs(self.chosen) / self.total, 0.0, self.prev_action, 1.0, self.target, *lat],
                            np.float32)  # fmt: skip
        hi_keep = self._keep(self.t, self.counts[self.t][-1], "max")
        lo_keep = self._keep(self.t, self.counts[self.t][0], "min")
        full, low = self.macs(hi_keep), self.macs(lo_keep)
        lat = [0.0, 0.0]
        if self._lat_features():
            lf, ll = self.latency(hi_keep), self.latency(lo_keep)  # type: ignore[misc]
            lat = [1 - lf / self.base_latency, (lf - ll) / self.base_latency]
        return np.array(
            [1 - full / self.total, (full - low) / self.total, self.prev_action, self.t / self.steps, self.target, *lat],
            dtype=np.float32,
        )

    def _lat_features(self) -> bool:
        """Latency features are on with a latency budget and a positive predicted original latency."""
        return self.latency_limit is not None and self.latency is not None and self.base_latency > 0

    def to_count(self, action: float) -> int:
        """The allowed count of the current group nearest to action * size, inside the wall."""
        lo, hi = self.bounds()
        size = self.sizes[self.t]
        want = min(max(action * size, lo), hi)
        options = [c for c in self.counts[self.t] if lo <= c <= hi]
        if self.latency_limit is not None:  # the wall's ends meet every constraint; inner counts may not
            options = [c for c in options if c == hi or self.ok(self._keep(self.t, c, "min"))]
        return min(options, key=lambda c: (abs(c - want), -c))

    def step(self, action: float) -> tuple[int, np.ndarray, bool]:
        """Apply one keep ratio: returns (the count taken, next features, done)."""
        count = self.to_count(float(action))
        self.chosen[self.group_ids[self.t]] = count
        self.prev_action = count / self.sizes[self.t]
        self.t += 1
        return count, self.features(), self.t >= self.steps

    def plan_macs(self) -> int:
        """MACs of the counts chosen so far (undecided groups whole)."""
        return self.macs(self.chosen)


def _prunable(analysis: Any) -> list[Any]:
    """The analysis' prunable groups in its (topological) order."""
    fn = getattr(analysis, "prunable_groups", None)
    if callable(fn):
        return list(fn())
    return [g for g in analysis.groups if g.prunable]


def ratio_of(count: int, size: int) -> float:
    """The keep ratio that rounds back to exactly `count` (counts are what the search decides)."""
    return count / size if size else 1.0
