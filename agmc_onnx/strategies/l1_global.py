"""`l1-global`: rank channels across all groups (importance normalised per group) to the MACs target."""

from __future__ import annotations

import numpy as np

from agmc_onnx.plan import Plan, round_count
from agmc_onnx.strategies.base import MacsSolver, StrategyContext


class L1Global:
    """Keep every channel whose normalised importance is above one global threshold."""

    name = "l1-global"

    def __init__(self) -> None:
        """Notes of the last solve."""
        self.notes: list[str] = []

    def propose(self, ctx: StrategyContext) -> Plan:
        """Bisect the global threshold; per group keep the channels above it, rounded."""
        solver = MacsSolver(ctx)
        normed: dict[int, np.ndarray] = {}
        for g in solver.groups:
            s = solver.cache.scores(g.id)
            top = float(s.max()) if s.size and s.max() > 0 else 1.0
            normed[g.id] = np.sort(s / top)[::-1]

        def family(t: float) -> dict[int, int]:
            thr = 1.0 - t  # t=0: threshold 1 (minimum), t=1: threshold 0 (everything)
            out = {}
            for g in solver.groups:
                above = int((normed[g.id] >= thr).sum()) if t < 1.0 else g.size
                out[g.id] = round_count(max(above, 1), g.size, ctx.round_to, g.class_width) if t < 1.0 else g.size
            return out

        plan = solver.solve(family)
        self.notes = solver.notes
        return plan
