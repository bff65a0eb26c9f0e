"""The pruning environment: one step per prunable group, actions -> keep counts under AMC's action wall."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from agmc_onnx.errors import InputError

DYN_FEATURES = 5  # MACs reduced so far, MACs still reducible, previous action, step / steps, target


def allowed_counts(size: int, round_to: int, a_min: float) -> list[int]:
    """Keep counts a group may take: multiples of `round_to` (or the full size), at least a_min*size."""
    r = max(1, int(round_to))
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
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        sizes: Sequence[int],
        macs: Callable[[Mapping[int, int]], int],
        total_macs: int,
        target: float,
        round_to: int = 1,
        a_min: float = 0.05,
    ) -> None:
        if not 0 < target <= 1:
            raise InputError(f"the FLOPs target must be in (0, 1], not {target}")
        self.group_ids = list(group_ids)
        self.sizes = list(sizes)
        self.macs = macs
        self.total = int(total_macs)
        self.target = float(target)
        self.limit = self.target * self.total
        self.a_min = a_min
        self.counts = [allowed_counts(s, round_to, a_min) for s in self.sizes]
        self.steps = len(self.group_ids)
        floor = self.macs({g: c[0] for g, c in zip(self.group_ids, self.counts, strict=True)})
        if floor > self.limit + 1e-6:
            raise InputError(
                f"the FLOPs target {target:g} is out of reach: every prunable group at its minimum "
                f"(keep ratio {a_min:g}, round_to {round_to}) still leaves {floor / max(1, self.total):.3f} of the MACs"
            )
        self.reset()

    @classmethod
    def from_analysis(cls, analysis: Any, target: float, round_to: int = 1, a_min: float = 0.05) -> PruningEnv:
        """The environment over an engine Analysis (its prunable groups, in their listed order)."""
        groups = _prunable(analysis)
        cost = analysis.cost
        macs = cost.macs
        if not getattr(cost, "counts_exact", True):  # MACs depend on WHICH channels: plan them (L1)
            from agmc_onnx.plan import ImportanceCache, plan_from_counts

            cache = ImportanceCache(analysis, "l1")
            macs = lambda keep: cost.plan_macs(plan_from_counts(analysis, keep, cache))  # noqa: E731
        return cls([g.id for g in groups], [g.size for g in groups], macs, cost.total_macs, target, round_to, a_min)

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

    def bounds(self) -> tuple[int, int]:
        """(lo, hi) keep counts for the current step under the action wall."""
        t, options = self.t, self.counts[self.t]
        a, b = 0, len(options) - 1  # hi: largest index with macs <= limit (rest at min)
        if self.macs(self._keep(t, options[b], "min")) <= self.limit:
            hi = b
        else:
            while a < b:
                m = (a + b + 1) // 2
                if self.macs(self._keep(t, options[m], "min")) <= self.limit:
                    a = m
                else:
                    b = m - 1
            hi = a
        a, b = 0, hi  # lo: smallest index with macs >= limit (rest at max), capped at hi
        while a < b:
            m = (a + b) // 2
            if self.macs(self._keep(t, options[m], "max")) >= self.limit:
                b = m
            else:
                a = m + 1
        return options[a], options[hi]

    def features(self) -> np.ndarray:
        """Dynamic state of the current step (AMC's FLOPs reduced / rest, previous action, position)."""
        if self.t >= self.steps:
            return np.array([1 - self.macs(self.chosen) / self.total, 0.0, self.prev_action, 1.0, self.target], np.float32)
        full = self.macs(self._keep(self.t, self.counts[self.t][-1], "max"))
        low = self.macs(self._keep(self.t, self.counts[self.t][0], "min"))
        return np.array(
            [1 - full / self.total, (full - low) / self.total, self.prev_action, self.t / self.steps, self.target],
            dtype=np.float32,
        )

    def to_count(self, action: float) -> int:
        """The allowed count of the current group nearest to action * size, inside the wall."""
        lo, hi = self.bounds()
        size = self.sizes[self.t]
        want = min(max(action * size, lo), hi)
        options = [c for c in self.counts[self.t] if lo <= c <= hi]
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
