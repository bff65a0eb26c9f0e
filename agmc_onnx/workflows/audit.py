"""The engine's account of a run: model summaries for `inspect`, and the audit report of a plan (costs
predicted and counted, every group's members and kept channels), so anyone can check what was removed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.analysis import Analysis
from agmc_onnx.cost import MAC_OPS, count_macs, count_params
from agmc_onnx.plan import Plan, group_step

PathLike = str | os.PathLike[str]


def group_macs_share(analysis: Analysis) -> dict[int, float]:
    """Fraction of the model's MACs that scale with each group's width."""
    total = analysis.cost.total_macs or 1
    return {g.id: (total - analysis.cost.macs({g.id: 0})) / total for g in analysis.groups}


def uncounted_bodies(analysis: Analysis) -> list[dict[str, Any]]:
    """Loop/If/Scan nodes whose bodies hold MAC ops: those MACs are not counted (design.md)."""
    out = []
    for node in analysis.model.nodes:
        ops = [n.op_type for g in _bodies(node) for n in _all_nodes(g) if n.op_type in MAC_OPS]
        if ops:
            out.append({"node": node.name, "op": node.op_type, "mac_ops": len(ops)})
    return out


def _bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs of one node."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of a graph and of its nested bodies."""
    out = list(graph.node)
    for n in graph.node:
        for g in _bodies(n):
            out += _all_nodes(g)
    return out


def why_nothing_prunable(analysis: Analysis) -> str:
    """One line on why no group is prunable: the first places where propagation froze or stopped."""
    if not analysis.groups:
        first = "; ".join(r for _, r in analysis.frozen[:3])
        return ("no channel groups: no layer's output channels could be followed" + (f" ({first})" if first else
                " (no Conv/Gemm/MatMul with constant weights whose output reaches another layer)"))  # fmt: skip
    reasons = list(dict.fromkeys(g.frozen_reason or "single channel" for g in analysis.groups))
    return "every channel group is frozen: " + "; ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")


def frozen_share(analysis: Analysis) -> dict[str, Any]:
    """Frozen channels besides the graph outputs' (groups frozen only because they reach an output), counting
    the output channels of weighted layers that fall out of every group (`Analysis.untracked`) as frozen."""
    total = sum(g.size for g in analysis.groups)
    outputs = sum(g.size for g in analysis.groups
                  if not g.prunable and g.frozen_reason and all(r.strip().startswith("graph output")
                                                                for r in g.frozen_reason.split(";")))
    frozen = sum(g.size for g in analysis.groups if not g.prunable) - outputs
    untracked = analysis.untracked()
    lost = sum(w for _, w in untracked)
    return {
        "output_channels": outputs,
        "untracked_channels": lost,
        "untracked_layers": [n for n, _ in untracked],
        "frozen_share": (frozen + lost) / max(1, total + lost - outputs),
    }


def summarize(analysis: Analysis) -> dict[str, Any]:
    """Totals and per-group facts (what `inspect --json` prints)."""
    share = group_macs_share(analysis)
    sizes = analysis.model.input_shapes
    return {
        "model": analysis.model.path,
        "input_shapes": sizes.to_json() if sizes is not None else None,
        "notes": list(analysis.model.notes),
        "uncounted": uncounted_bodies(analysis),
        "why_nothing_prunable": None if analysis.prunable_groups() else why_nothing_prunable(analysis),
        "opset": analysis.model.opset,
        "nodes": len(analysis.model.nodes),
        "macs": analysis.cost.total_macs,
        "params": analysis.cost.total_params,
        "groups": len(analysis.groups),
        "prunable_groups": len(analysis.prunable_groups()),
        "prunable_channels": sum(g.size for g in analysis.prunable_groups()),
        "frozen_channels": sum(g.size for g in analysis.groups if not g.prunable),
        **frozen_share(analysis),
        "group_table": [
            {
                "id": g.id,
                "size": g.size,
                "macs_share": round(share[g.id], 6),
                "prunable": g.prunable,
                "frozen_reason": g.frozen_reason if g.frozen_reason else (None if g.prunable else "single channel"),
                "producers": g.producers,
                "members": len(g.members),
                "class_width": g.class_width,
                "statistics": list(g.stats),
            }
            for g in analysis.groups
        ],
        "frozen": [{"node": n, "reason": r} for n, r in analysis.frozen],
    }


def build_report(analysis: Analysis, plan: Plan, proto: onnx.ModelProto, **facts: Any) -> dict[str, Any]:
    """Report: before/after costs (predicted and counted), the plan, per group its members and kept indices.

    Before and after are counted by one counter (count_macs / count_params) over the normalised original
    and the written file, at the run's input size; every ratio is made of those two counts."""
    cost = analysis.cost
    sizes = analysis.model.input_shapes
    before = count_macs(analysis.model.proto, sizes)
    before_params = count_params(analysis.model.proto)
    after_counted = count_macs(proto, sizes)
    after_params = count_params(proto)
    round_to = facts.get("round_to")
    groups = []
    for g in analysis.groups:
        kept = plan.kept.get(g.id, list(range(g.size))) if g.prunable else list(range(g.size))
        groups.append(
            {
                "id": g.id,
                "size": g.size,
                "kept_count": len(kept),
                "kept": [int(i) for i in kept],
                "prunable": g.prunable,
                "round_step": group_step(g.size, round_to, g.class_width) if g.prunable and round_to is not None else None,
                "frozen_reason": g.frozen_reason,
                "producers": g.producers,
                "members": [
                    {"tensor": m.tensor, "node": m.node, "axis": m.axis, "role": m.role,
                     "positions": list(m.positions), "channels": list(m.channels)}
                    for m in g.members
                ],
            }
        )
    return {
        **facts,
        "input_shapes": sizes.to_json() if sizes is not None else None,
        "before": {"macs": before, "params": before_params, "macs_predicted": cost.total_macs,
                   "params_predicted": cost.total_params},
        "after": {
            "macs": after_counted,
            "params": after_params,
            "macs_predicted": cost.plan_macs(plan),
            "params_predicted": cost.plan_params(plan),
        },
        "macs_ratio": after_counted / before if before else None,
        "params_ratio": after_params / before_params if before_params else None,
        "plan": plan.to_json(),
        "groups": groups,
        "frozen": [{"node": n, "reason": r} for n, r in analysis.frozen],
    }


def default_output(path: PathLike) -> Path:
    """MODEL.pruned.onnx beside the input."""
    p = Path(path)
    return p.with_name(p.name[: -len(".onnx")] + ".pruned.onnx" if p.name.endswith(".onnx") else p.name + ".pruned.onnx")
