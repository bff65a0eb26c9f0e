"""Predicted against measured latency, for the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def verification(budget_section: Mapping[str, Any], latency: Mapping[str, Any] | None) -> dict[str, Any]:
    """Predicted vs measured (interleaved original/pruned bench) at the budget's batch, for the report."""
    out = dict(budget_section)
    batch = int(budget_section["batch"])
    rows = {r["model"]: r for r in (latency or {}).get("results", []) if int(r["batch"]) == batch}
    final = next((m for m in ("finetuned", "pruned") if m in rows), None)
    if final is None or "original" not in rows:
        out["measured"] = None
        return out
    measured_ms = float(rows[final]["median_ms"])
    orig_ms = float(rows["original"]["median_ms"])
    speedup = orig_ms / measured_ms
    pred = float(budget_section["predicted_ms"])
    pred_speedup = float(budget_section["predicted_original_ms"]) / pred
    out["measured"] = {
        "original_ms": orig_ms, "pruned_ms": measured_ms, "speedup": speedup,
        "error": (pred - measured_ms) / measured_ms, "speedup_error": (pred_speedup - speedup) / speedup,
    }  # fmt: skip
    met = True
    if budget_section.get("target_speedup") is not None:
        met = met and speedup >= float(budget_section["target_speedup"])
    if budget_section.get("target_latency_ms") is not None:
        met = met and measured_ms <= float(budget_section["target_latency_ms"])
    out["measured"]["met"] = met
    return out
