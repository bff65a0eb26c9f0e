"""The whole-model fit: measured = scale * table sum + offset, over the original, uniform cuts and random plans.

The "rest" of the model and per-session overheads land in the offset; random plans make the fit
see neighbouring layers of unequal widths, as searched plans have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agmc_onnx.latency.layers import LayerSpec
from agmc_onnx.latency.measure import RunnerFactory, Timer, random_feeds
from agmc_onnx.latency.tables import NodeTable

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.plan import RoundTo

CALIBRATION_KEEP = (1.0, 0.5, 0.25)  # uniform keep fractions measured whole to fit scale and offset
CALIBRATION_RANDOM = 3  # and as many seeded random plans (keep ratio per group uniform in [0.25, 1]), so the fit sees
# widths that differ between neighbouring layers, as searched plans have, not only uniform cuts


def calibrate(analysis: Analysis, specs: list[LayerSpec], nodes: dict[str, NodeTable], batch: int, round_to: RoundTo,
              factory: RunnerFactory, timer: Timer, warmup: int, repeats: int,
              ) -> tuple[float, float, float, list[dict[str, float]]]:  # fmt: skip
    """Fit measured = scale * table sum + offset on the original, uniform cuts and random plans, interleaved.

    Each copy runs in bench.SESSIONS sessions (its fastest counts); the line is fitted robustly
    (_robust_line). The old least-squares fit fell back to an additive offset alone when rejected:
    one slow measurement once made that offset -324 ms and every pruned plan's prediction negative.
    """
    from agmc_onnx.bench import SESSIONS, measure_sessions
    from agmc_onnx.plan import ImportanceCache, plan_from_counts, round_count
    from agmc_onnx.surgery import prune

    cache = ImportanceCache(analysis, "l1")
    groups = analysis.prunable_groups()
    rng = np.random.default_rng(0)
    plans: list[tuple[str, dict[int, int]]] = [(f"uniform {f:g}", {g.id: round_count(f * g.size, g.size, round_to)
                                                                     for g in groups}) for f in CALIBRATION_KEEP]
    for k in range(CALIBRATION_RANDOM):
        ratios = rng.uniform(0.25, 1.0, len(groups))
        plans.append((f"random {k}", {g.id: round_count(r * g.size, g.size, round_to) for g, r in zip(groups, ratios, strict=True)}))
    raws, runners, labels = [], [], []
    seen: set[tuple[int, ...]] = set()
    for label, counts in plans:
        sig = tuple(counts[g.id] for g in groups)
        if sig in seen:
            continue
        seen.add(sig)
        whole = all(counts[g.id] == g.size for g in groups)
        proto = analysis.model.proto if whole else prune(analysis, plan_from_counts(analysis, counts, cache))
        raws.append(sum(nodes[s.node].at(s.in_len.of_counts(counts), s.out_len.of_counts(counts)) for s in specs))
        feeds = random_feeds(proto, batch, analysis.model.input_shapes)
        runners.append([factory(proto, feeds) for _ in range(SESSIONS)])
        labels.append(label)
    samples = measure_sessions(runners, warmup, max(repeats, 10), timer)
    measured = [float(np.median(s)) for s in samples]
    scale, offset = _robust_line(np.array(raws), np.array(measured))
    calib = [{"plan": p, "table_sum_ms": r, "measured_ms": m, "predicted_ms": scale * r + offset}
             for p, r, m in zip(labels, raws, measured, strict=True)]  # fmt: skip
    return scale, offset, measured[0], calib


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """y ~ scale * x + offset by Theil-Sen (median of pairwise slopes, then median offset).

    One wild measurement among the six calibration plans (an ORT session stuck 3x slow) moves a
    least-squares line; it does not move the medians. A slope outside [0.25, 4], or a line that goes
    negative inside the data, means noise dominated: the tables are then scaled through the origin
    by the median measured / table ratio.
    """
    ok = x > 0
    through_origin = (float(np.median(y[ok] / x[ok])) if ok.any() else 1.0, 0.0)
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))
              if abs(x[j] - x[i]) > 1e-9 * max(1.0, abs(x[i]))]  # fmt: skip
    if not slopes:
        return through_origin
    a = float(np.median(slopes))
    b = float(np.median(y - a * x))
    if not 0.25 <= a <= 4.0 or a * float(x.min()) + b <= 0:
        return through_origin
    return a, b
