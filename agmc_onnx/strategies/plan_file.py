"""`plan`: read a JSON plan {group id: keep ratio | [kept indices]} (or a report's "plan")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from agmc_onnx.errors import InputError
from agmc_onnx.plan import Plan, counts_from_ratios, plan_from_counts, validate
from agmc_onnx.strategies.base import StrategyContext


def parse_plan(ctx: StrategyContext, data: Any, source: str | None = None) -> Plan:
    """A Plan from {gid: ratio|[indices]}, {"kept": ..., "ratios": ...} or a report with a "plan"."""
    a = ctx.analysis
    if isinstance(data, dict) and "plan" in data and isinstance(data["plan"], dict):
        data = data["plan"]
    if isinstance(data, dict) and "kept" in data and isinstance(data["kept"], dict):
        try:
            plan = Plan.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed plan ({exc})", source) from exc
        validate(a, plan, source)
        return plan
    if not isinstance(data, dict):
        raise InputError("a plan must be a JSON object {group id: ratio or [kept indices]}", source)
    ratios: dict[int, float] = {}
    explicit: dict[int, list[int]] = {}
    for key, val in data.items():
        try:
            gid = int(key)
        except ValueError as exc:
            raise InputError(f"plan key {key!r} is not a group id", source) from exc
        if gid < 0 or gid >= len(a.groups):
            raise InputError(f"plan names group {gid}, the model has groups 0..{len(a.groups) - 1}", source)
        if isinstance(val, list):
            try:
                explicit[gid] = sorted(int(i) for i in val)
            except (TypeError, ValueError) as exc:
                raise InputError(f"group {gid}: kept indices must be integers, got {val!r}", source) from exc
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            if not math.isfinite(val) or not 0 < val <= 1:
                raise InputError(f"group {gid}: keep ratio {val} is outside (0, 1]", source)
            if not a.groups[gid].prunable and val < 1:
                raise InputError(f"plan prunes group {gid}, which is frozen: {a.groups[gid].frozen_reason}", source)
            ratios[gid] = float(val)
        else:
            raise InputError(f"group {gid}: expected a ratio or a list of indices, got {val!r}", source)
    counts = counts_from_ratios(a, ratios, ctx.round_to)
    plan = plan_from_counts(a, counts, ctx.importance)
    for gid, kept in explicit.items():
        plan.kept[gid] = kept
    plan.ratios = {gid: len(k) / a.groups[gid].size for gid, k in plan.kept.items()}
    validate(a, plan, source)
    return plan


class PlanFile:
    """Plan given explicitly: ctx.options["plan"] is a path, a dict or a Plan."""

    name = "plan"

    def __init__(self) -> None:
        """No notes: the plan is taken as given."""
        self.notes: list[str] = []

    def propose(self, ctx: StrategyContext) -> Plan:
        """Read and validate the plan."""
        src = ctx.options.get("plan")
        if src is None:
            raise InputError("strategy 'plan' needs --plan FILE")
        if isinstance(src, Plan):
            validate(ctx.analysis, src)
            return src
        if isinstance(src, dict):
            return parse_plan(ctx, src)
        return parse_plan(ctx, read_plan_file(src), str(src))


def read_plan_file(path: str | Path) -> Any:
    """A plan file's JSON (an object); errors name the file. Checked up front, before the model is analysed."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("plan file not found", p) from exc
    except IsADirectoryError as exc:
        raise InputError("plan file is a directory", p) from exc
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(f"plan file is not valid JSON ({str(exc)[:160]})", p) from exc
    if not isinstance(data, dict):
        raise InputError("a plan must be a JSON object {group id: ratio or [kept indices]}", p)
    return data
