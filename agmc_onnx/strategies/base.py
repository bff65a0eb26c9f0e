"""The strategy interface: a budget, a context, and `propose(ctx) -> Plan`; plus a shared MACs solver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agmc_onnx.budget import Budget, check_target
from agmc_onnx.budget import latency_limit as budget_latency_limit
from agmc_onnx.errors import InputError
from agmc_onnx.plan import ImportanceCache, Plan, RoundTo, group_step, plan_from_counts, round_count

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis

TOLERANCE = 0.01  # solvers land within 1% of the MACs target


@dataclass
class StrategyContext:
    """Everything a strategy may use to propose a plan."""

    analysis: Analysis
    budget: Budget
    round_to: RoundTo  # parse_round_to's value: N, or "auto:B" (per-group steps, see group_step)
    importance: str = "l1"
    evaluator: Any = None  # agmc_onnx.evaluate.Evaluator for search strategies
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # the model file, for messages
    latency: Any = None  # agmc_onnx.latency.LatencyModel: needed by latency / speed-up budgets


class Strategy(Protocol):
    """A channel-selection strategy."""

    name: str

    def propose(self, ctx: StrategyContext) -> Plan:
        """A plan for ctx.analysis within ctx.budget."""
        ...


def latency_limit(ctx: StrategyContext) -> float | None:
    """The latency limit (ms) of ctx.budget, None without a latency or speed-up target."""
    return budget_latency_limit(ctx.budget, ctx.latency, ctx.path)


class MacsSolver:
    """Meets a MACs target from a monotone family of keep counts, then fine-tunes per group."""

    def __init__(self, ctx: StrategyContext) -> None:
        """Cache importance and sizes of the prunable groups."""
        self.ctx = ctx
        self.analysis = ctx.analysis
        self.cache = ImportanceCache(ctx.analysis, ctx.importance)
        self.groups = ctx.analysis.prunable_groups()
        if not self.groups:
            raise InputError("nothing prunable: every channel group is frozen", ctx.path)
        self.latency_limit = latency_limit(ctx)
        self.total = ctx.analysis.cost.total_macs
        if self.latency_limit is None or ctx.budget.flops is not None:
            self.target_frac = check_target(ctx.budget.flops)
        else:
            self.target_frac = None  # latency only: no MACs constraint
        self.target = (self.target_frac or 1.0) * self.total
        self.notes: list[str] = []

    def plan(self, counts: dict[int, int]) -> Plan:
        """Plan for keep counts (most important channels kept)."""
        return plan_from_counts(self.analysis, counts, self.cache)

    def macs(self, counts: dict[int, int]) -> int:
        """Exact MACs for keep counts (from counts alone when the cost model is exact for counts)."""
        cost = self.analysis.cost
        return cost.macs(counts) if cost.counts_exact else cost.plan_macs(self.plan(counts))

    def minimum(self) -> dict[int, int]:
        """Smallest allowed counts: one rounding step per group."""
        return {g.id: round_count(0, g.size, self.ctx.round_to, g.class_width) for g in self.groups}

    def solve_counts(self, family: Callable[[float], dict[int, int]]) -> dict[int, int]:
        """Keep counts from bisection over `family` plus greedy adjustment (no fallback)."""
        return self._solve(family, _uniform_family=True)[0]

    def solve(self, family: Callable[[float], dict[int, int]]) -> Plan:
        """Bisect t in [0, 1] (family(0) smallest, family(1) full) to the target; adjust groups; check 1%."""
        if self.latency_limit is not None:
            return self._solve_latency(family)
        best, got, err = self._solve(family)
        if err > TOLERANCE:
            self.notes.append(
                f"could not land within 1% of the target: got {got / self.total:.4f} of MACs for a "
                f"target of {self.target_frac:g} (--round-to {self.ctx.round_to} is too coarse, or too few channels are "
                "prunable: see `agmc-onnx inspect`)"
            )
        plan = self.plan(best)
        plan.ratios = {g.id: best[g.id] / g.size for g in self.groups}
        return plan

    def _solve(
        self, family: Callable[[float], dict[int, int]], _uniform_family: bool = False
    ) -> tuple[dict[int, int], int, float]:
        """Counts, their MACs and the relative error (of the original's MACs)."""
        lo_counts = self.minimum()
        lo_macs = self.macs(lo_counts)
        if lo_macs > self.target * (1 + TOLERANCE):
            raise InputError(
                f"target {self.target_frac:g} of MACs is unreachable: the minimum with --round-to "
                f"{self.ctx.round_to} is {lo_macs / self.total:.4f} of the original ({lo_macs} MACs)",
                self.ctx.path,
            )
        lo, hi = 0.0, 1.0
        best = family(0.0)
        for _ in range(40):
            mid = (lo + hi) / 2
            c = family(mid)
            if self.macs(c) <= self.target:
                lo, best = mid, c
            else:
                hi = mid
            if hi - lo < 1e-6:
                break
        if self.macs(best) > self.target:
            best = lo_counts
        over = family(hi)
        cands = [best, over]
        best = min(cands, key=lambda c: abs(self.macs(c) - self.target))
        best = self.adjust(best)
        got = self.macs(best)
        err = abs(got - self.target) / self.total
        if err > TOLERANCE and not _uniform_family:
            # coarse groups: a uniform start reaches targets the family's own start cannot
            sizes = {g.id: (g.size, g.class_width) for g in self.groups}
            alt = self.solve_counts(lambda t: {g: round_count(t * n, n, self.ctx.round_to, w) for g, (n, w) in sizes.items()})
            if abs(self.macs(alt) - self.target) < abs(got - self.target):
                best, got = alt, self.macs(alt)
                err = abs(got - self.target) / self.total
        return best, got, err

    def feasible(self, counts: dict[int, int]) -> bool:
        """True when counts meet every constraint: predicted latency and (when set) MACs at most the target."""
        if self.latency_limit is not None and self.ctx.latency.predict(counts) > self.latency_limit:
            return False
        return self.target_frac is None or self.macs(counts) <= self.target

    def _solve_latency(self, family: Callable[[float], dict[int, int]]) -> Plan:
        """Largest member of `family` meeting every constraint, then grown one unit at a time while it still does."""
        lo_counts = self.minimum()
        if not self.feasible(lo_counts):
            ms = self.ctx.latency.predict(lo_counts)
            raise InputError(
                f"latency target {self.latency_limit:.4g} ms is unreachable: the smallest plan with --round-to "
                f"{self.ctx.round_to} is predicted at {ms:.4g} ms ({self.macs(lo_counts) / self.total:.4f} of MACs)",
                self.ctx.path,
            )
        lo, hi, best = 0.0, 1.0, lo_counts
        for _ in range(40):
            mid = (lo + hi) / 2
            c = family(mid)
            if self.feasible(c):
                lo, best = mid, c
            else:
                hi = mid
            if hi - lo < 1e-6:
                break
        best = self.fill(best)
        plan = self.plan(best)
        plan.ratios = {g.id: best[g.id] / g.size for g in self.groups}
        return plan

    def fill(self, counts: dict[int, int]) -> dict[int, int]:
        """Widen one group by one unit at a time while every constraint holds (least-kept groups first)."""
        counts = dict(counts)
        size = {g.id: g.size for g in self.groups}
        blocked: set[int] = set()  # groups whose next step breaks a constraint (stays so: others only grow)
        while True:
            order = sorted((g for g in counts if g not in blocked), key=lambda g: (counts[g] / size[g], g))
            for gid in order:
                c = self._step(counts, gid, True)
                if c is not None and self.feasible(c):
                    counts = c
                    break
                blocked.add(gid)
            else:
                return counts

    def _step(self, counts: dict[int, int], gid: int, up: bool) -> dict[int, int] | None:
        """Counts with group `gid` one rounding unit wider (up) or narrower; None at the limit."""
        size = self.analysis.groups[gid].size
        n = group_step(size, self.ctx.round_to, self.analysis.groups[gid].class_width)
        k = counts[gid]
        new = round_count(k + n, size, n) if up else round_count(k - n, size, n)
        if new == k:
            return None
        out = dict(counts)
        out[gid] = new
        return out

    def adjust(self, counts: dict[int, int]) -> dict[int, int]:
        """Greedy one-unit steps (single groups, then pairs of groups) toward the target until within 1%."""
        counts = dict(counts)
        for _ in range(4 * len(self.groups) + 8):
            cur = self.macs(counts)
            err = abs(cur - self.target)
            if err <= TOLERANCE * self.total * 0.5:
                break
            up = cur < self.target
            singles = [c for c in (self._step(counts, gid, up) for gid in counts) if c is not None]
            scored = sorted(((abs(self.macs(c) - self.target), i) for i, c in enumerate(singles)))
            if scored and scored[0][0] < err:
                counts = singles[scored[0][1]]
                continue
            # no single step helps: one group one way, another the other way (largest impact first)
            best, best_err = None, err
            gids = sorted(counts, key=lambda g: -abs(self.macs(counts) - self.macs(self._step(counts, g, up) or counts)))
            for g1 in gids[:24]:
                first = self._step(counts, g1, up)
                if first is None:
                    continue
                for g2 in gids[:24]:
                    if g2 == g1:
                        continue
                    second = self._step(first, g2, not up)
                    if second is None:
                        continue
                    e = abs(self.macs(second) - self.target)
                    if e < best_err:
                        best, best_err = second, e
            if best is None:
                break
            counts = best
        return counts
