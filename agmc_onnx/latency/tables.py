"""Latency tables and the predictor: per-layer tables interpolated at kept widths, mapped to whole-model ms.

The predictor mirrors the cost model: per node, the table interpolated (bilinear) at the kept
widths that `Length.of_counts` gives for the plan's keep counts; summed; then mapped to whole-model
milliseconds by `scale * sum + offset` (the fit of calibrate.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from agmc_onnx.budget import budget_limit_ms
from agmc_onnx.latency.layers import LayerSpec, layer_specs

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.budget import Budget
    from agmc_onnx.plan import Plan

FORMAT = 2  # 2: calibration rows name their plan (uniform cuts and random plans)


@dataclass
class NodeTable:
    """Measured latency (ms) of one layer on a grid of kept (input, output) widths."""

    grid_in: list[int]
    grid_out: list[int]
    ms: list[list[float]]  # [len(grid_in)][len(grid_out)]

    def at(self, cin: float, cout: float) -> float:
        """Bilinear interpolation (clamped at the grid's ends)."""
        i0, i1, wi = _bracket(self.grid_in, cin)
        o0, o1, wo = _bracket(self.grid_out, cout)
        m = self.ms
        top = m[i0][o0] * (1 - wo) + m[i0][o1] * wo
        bot = m[i1][o0] * (1 - wo) + m[i1][o1] * wo
        return top * (1 - wi) + bot * wi


def _bracket(grid: list[int], x: float) -> tuple[int, int, float]:
    """Indices around x in a sorted grid and the weight of the upper one."""
    if len(grid) == 1 or x <= grid[0]:
        return 0, 0, 0.0
    if x >= grid[-1]:
        n = len(grid) - 1
        return n, n, 0.0
    j = bisect.bisect_right(grid, x)
    lo, hi = grid[j - 1], grid[j]
    return j - 1, j, (x - lo) / (hi - lo)


@dataclass
class LatencyTable:
    """Everything measured for one (model, provider, threads, batch, machine): layer tables and the fit."""

    key: str
    settings: dict[str, Any]
    nodes: dict[str, NodeTable]
    scale: float
    offset_ms: float
    base_ms: float  # measured latency of the original model
    calibration: list[dict[str, float]]
    skipped: list[str]
    measurements: int
    build_seconds: float
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d.pop("cached")
        d["format"] = FORMAT
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LatencyTable:
        """Inverse of to_json."""
        if d.get("format") != FORMAT:
            raise ValueError(f"latency table format {d.get('format')!r}, expected {FORMAT}")
        nodes = {k: NodeTable(**v) for k, v in d["nodes"].items()}
        fields = {k: d[k] for k in ("key", "settings", "scale", "offset_ms", "base_ms", "calibration", "skipped",
                                    "measurements", "build_seconds")}  # fmt: skip
        return cls(nodes=nodes, cached=True, **fields)


class LatencyModel:
    """Predicted whole-model latency (ms) for keep counts per group, from a LatencyTable."""

    def __init__(self, analysis: Analysis, table: LatencyTable, specs: list[LayerSpec] | None = None) -> None:
        """Bind the table to the analysis' per-node width terms."""
        self.analysis = analysis
        self.table = table
        specs = specs if specs is not None else layer_specs(analysis, table.settings["round_to"],
                                                             int(table.settings["max_points"]))[0]  # fmt: skip
        self.terms = [(s.in_len, s.out_len, table.nodes[s.node]) for s in specs if s.node in table.nodes]
        self.names = [s.node for s in specs if s.node in table.nodes]
        self.base_ms = table.base_ms
        self.batch = int(table.settings["batch"])

    def raw(self, keep: Mapping[int, int]) -> float:
        """Sum of the layer tables at the kept widths (ms, before the whole-model fit)."""
        return sum(t.at(i.of_counts(keep), o.of_counts(keep)) for i, o, t in self.terms)

    def node_ms(self, keep: Mapping[int, int] | None = None) -> dict[str, float]:
        """Per-layer table latency at the kept widths (ms)."""
        keep = keep or {}
        return {n: t.at(i.of_counts(keep), o.of_counts(keep)) for n, (i, o, t) in zip(self.names, self.terms, strict=True)}

    def predict(self, keep: Mapping[int, int]) -> float:
        """Predicted latency (ms) of the model pruned to these keep counts (missing groups: whole)."""
        return self.table.scale * self.raw(keep) + self.table.offset_ms

    def predict_plan(self, plan: Plan) -> float:
        """Predicted latency (ms) of a plan."""
        return self.predict(plan.keep_counts())

    def limit_ms(self, budget: Budget) -> float | None:
        """The latency limit a budget sets (ms): the tighter of latency_ms and predicted original / speedup.

        A speed-up is a ratio of predictions (the original's predicted latency, not its measured one):
        the tables predict ratios within a few percent while absolute latency drifts with the machine's
        load, and mixing a measurement into the ratio would carry that drift into the budget.
        """
        return budget_limit_ms(budget, self.predict({}))

    def summary(self) -> dict[str, Any]:
        """Facts for a report: settings, fit, size and build time of the table."""
        t = self.table
        return {"key": t.key, **t.settings, "layers": len(t.nodes), "measurements": t.measurements,
                "build_seconds": round(t.build_seconds, 3), "cached": t.cached, "scale": t.scale,
                "offset_ms": t.offset_ms, "base_ms": t.base_ms, "calibration": t.calibration,
                "unmodelled_mac_nodes": t.skipped}  # fmt: skip
