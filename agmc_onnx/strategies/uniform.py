"""`uniform`: one keep ratio for every prunable group, solved so the pruned MACs meet the target."""

from __future__ import annotations

from agmc_onnx.plan import Plan, round_count
from agmc_onnx.strategies.base import MacsSolver, StrategyContext


class Uniform:
    """Same keep ratio everywhere (bisection over the ratio, then per-group rounding fixes)."""

    name = "uniform"

    def __init__(self) -> None:
        """Notes of the last solve (e.g. target missed by more than 1%)."""
        self.notes: list[str] = []

    def propose(self, ctx: StrategyContext) -> Plan:
        """A plan with one ratio r, the largest whose MACs do not exceed the target (then adjusted)."""
        solver = MacsSolver(ctx)
        sizes = {g.id: (g.size, g.class_width) for g in solver.groups}

        def family(t: float) -> dict[int, int]:
            return {gid: round_count(t * s, s, ctx.round_to, w) for gid, (s, w) in sizes.items()}

        plan = solver.solve(family)
        self.notes = solver.notes
        return plan
