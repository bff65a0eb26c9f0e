"""Graph surgery: write the pruned model (prune) or zero the removed channels in place (mask)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from agmc_onnx.errors import AgmcError
from agmc_onnx.groups import Analysis
from agmc_onnx.plan import Plan, validate


class SurgeryContext:
    """What rewrites see (the ops.Surgery protocol): the plan's keep masks per tensor and the constants of
    the model being rewritten."""

    def __init__(self, analysis: Analysis, plan: Plan, proto: onnx.ModelProto) -> None:
        """Index the initializers of `proto` (a copy of the analysed model)."""
        self.analysis = analysis
        self.plan = plan
        self.proto = proto
        self.opset = analysis.model.opset
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        self.changed: set[str] = set()

    def keep_mask(self, tensor: str) -> np.ndarray:
        """Kept positions of an activation's channel axis."""
        return self.analysis.keep_mask(self.analysis.tensor_channels(tensor), self.plan)

    def new_len(self, tensor: str) -> int:
        """Channel count of an activation after pruning."""
        return int(self.keep_mask(tensor).sum())

    def const(self, name: str) -> np.ndarray:
        """Current value of an initializer."""
        return self.consts[name]

    def set_const(self, name: str, value: np.ndarray) -> None:
        """Replace an initializer's value."""
        self.consts[name] = value
        self.changed.add(name)

    def fresh_const(self, base: str, value: np.ndarray) -> str:
        """Add a new initializer with a unique name."""
        name, k = base, 0
        while name in self.consts:
            k += 1
            name = f"{base}_{k}"
        self.consts[name] = value
        self.changed.add(name)
        return name

    def write_back(self) -> None:
        """Store changed constants into the proto (same names, same order)."""
        existing = {t.name for t in self.proto.graph.initializer}
        for i, t in enumerate(self.proto.graph.initializer):
            if t.name in self.changed:
                self.proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(self.consts[t.name], t.name))
        for name in sorted(self.changed - existing):
            self.proto.graph.initializer.append(numpy_helper.from_array(self.consts[name], name))


def _axis_masks(analysis: Analysis, plan: Plan) -> dict[tuple[str, int], np.ndarray]:
    """Keep mask of every (initializer, axis) that holds channels of a pruned group."""
    out = {}
    for key, chans in analysis.axis_map.items():
        mask = analysis.keep_mask(chans, plan)
        if not mask.all():
            out[key] = mask
    return out


def prune(analysis: Analysis, plan: Plan, check: bool = True) -> onnx.ModelProto:
    """The analysed model with the plan's removed channels cut out; shapes re-inferred and checked."""
    validate(analysis, plan)
    proto = copy.deepcopy(analysis.model.proto)
    ctx = SurgeryContext(analysis, plan, proto)
    for (name, axis), mask in _axis_masks(analysis, plan).items():
        ctx.set_const(name, np.compress(mask, ctx.const(name), axis=axis))
    nodes = {n.name: n for n in proto.graph.node}
    for node_name, rewrite in analysis.hooks:
        rewrite.apply(ctx, nodes[node_name])
    ctx.write_back()
    del proto.graph.value_info[:]
    outputs = {o.name: copy.deepcopy(o) for o in proto.graph.output}
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise AgmcError(f"pruned graph fails shape inference: {exc}") from exc
    for o in proto.graph.output:
        o.CopyFrom(outputs[o.name])
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:
            raise AgmcError(f"pruned graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return proto


def mask(analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """The analysed model with every consumer member's removed positions zeroed (same shapes)."""
    validate(analysis, plan)
    proto = copy.deepcopy(analysis.model.proto)
    ctx = SurgeryContext(analysis, plan, proto)
    kept = {gid: set(v) for gid, v in plan.kept.items() if analysis.groups[gid].prunable}
    for gid, keep in kept.items():
        for m in analysis.groups[gid].members:
            if m.role != "consumer":
                continue
            drop = [p for p, c in zip(m.positions, m.channels, strict=True) if c not in keep]
            if not drop:
                continue
            arr = ctx.const(m.tensor).copy()
            idx: list[Any] = [slice(None)] * arr.ndim
            idx[m.axis] = drop
            arr[tuple(idx)] = 0
            ctx.set_const(m.tensor, arr)
    ctx.write_back()
    return proto
