"""Ops whose channel width sits in a shape constant: Reshape (flatten into a Linear, channel shuffle's split
and merge, a moved channel axis kept whole; a target built by a Shape->Gather->Concat subgraph) and Expand.
Their rewrite, ShapeChannel (ops/regroup.py, beside the factored reshape that shares it), writes the kept width
into that constant."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from agmc_onnx.ops import regroup
from agmc_onnx.ops.common import attrs, rank, tracked
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported, rule
from agmc_onnx.ops.regroup import ShapeChannel
from agmc_onnx.ops.shape_expr import RuntimeShape, runtime_shape

__all__ = ["ShapeChannel", "expand", "reshape", "shape_entries"]

@rule("Expand", any_axis=True)
def expand(p: Propagation, node: onnx.NodeProto) -> None:
    """Expanding spatial axes passes channels through; the channel entry of the shape is rewritten."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    shape = p.const(node.input[1])
    rin, rout = rank(p, node.input[0]), rank(p, node.output[0])
    if shape is None or rin is None or rout is None or rin != rout or shape.size != rin:
        raise Unsupported("Expand with a run-time shape or rank change")
    if int(shape[t]) not in (1, len(ids)):
        raise Unsupported("Expand broadcasts the channel axis")
    if int(shape[t]) == len(ids) and len(ids) != 1:
        p.hook(node, ShapeChannel(node.output[0], node.input[1], t))
    p.set(node.output[0], ids, t)


@rule("Reshape", any_axis=True, split_aware=True, layout_aware=True)
def reshape(p: Propagation, node: onnx.NodeProto) -> None:
    """Reshape of channels off axis 1 or over several axes (tokens, windows, attention heads) is the factored
    reshape of ops/factors.py, the rules below its fallback; on axis 1 the rules below come first (flatten
    into a Linear, [N,C] kept leading, a channel shuffle's split and merge), the factored reshape second."""
    x = node.input[0]
    if p.layout(x) is not None or (p.axis(x) != 1 and p.split(x) is None):
        try:
            regroup.reshape(p, node)
            return
        except Unsupported as exc:
            if p.layout(x) is not None:
                raise
            factored = exc
        try:
            _reshape_plain(p, node)
        except Unsupported:
            raise factored from None
        return
    try:
        _reshape_plain(p, node)
    except Unsupported as exc:
        if p.split(x) is not None:
            raise
        try:
            regroup.reshape(p, node)
        except Unsupported:
            raise exc from None


def _reshape_plain(p: Propagation, node: onnx.NodeProto) -> None:
    """Reshape that flattens [N,C,...] into [N,C*S] or keeps [N,C] leading (or, for a channel axis
    elsewhere, keeps it whole), or splits / merges the channel axis for a channel shuffle; anything
    else freezes."""
    ids = tracked(p, node.input[0])
    sin, sout = p.shape(node.input[0]), p.shape(node.output[0])
    if sin is None or len(sin) < 2:
        raise Unsupported("Reshape of unknown shape")
    if p.split(node.input[0]) is not None:
        _reshape_merge(p, node, ids, p.axis(node.input[0]), sin)
        return
    if p.axis(node.input[0]) != 1:
        _reshape_moved(p, node, ids, p.axis(node.input[0]), sin)
        return
    target, rt = _target(p, node, sin)
    if target is not None:
        if sout is None or any(not isinstance(d, int) for d in (sout or [])[1:]):
            sout = _resolve(sin, target, int(attrs(node).get("allowzero", 0)))
    if sout is None or len(sout) < 2 or not isinstance(sout[1], int):
        raise Unsupported("Reshape to an unknown shape")
    batch_ok = _same_dim(sin[0], sout[0]) or (target is not None and target[0] == 0)
    if not batch_ok and target is not None and target[0] == -1 and all(isinstance(d, int) for d in sin[1:]):
        if all(t > 0 for t in target[1:]) and int(np.prod(target[1:])) == int(np.prod(sin[1:])):
            batch_ok = True  # reshape(-1, C*H*W): the -1 is the batch
            sout = [sin[0], *target[1:]]
    if not batch_ok:
        raise Unsupported("Reshape mixes the batch axis")
    rest_in = sin[2:]
    if any(not isinstance(d, int) for d in rest_in):
        raise Unsupported("Reshape of a non-static spatial size")
    hw = int(np.prod(rest_in)) if rest_in else 1
    rest_out = sout[2:]
    if sout[1] == len(ids) and all(isinstance(d, int) for d in rest_out) and int(np.prod(rest_out or [1])) == hw:
        out = ids
    elif len(sout) == 2 and sout[1] == len(ids) * hw:
        out = [c for c in ids for _ in range(hw)]
    else:
        _reshape_split(p, node, ids, 1, sin)  # channel shuffle's split, or Unsupported
        return
    if target is None:
        elems = _runtime_shape_elems(p, node.input[1])
        if elems is None or len(elems) != 2 or elems[1] != -1 or elems[0] not in ("batch0", 0):
            raise Unsupported("Reshape target shape computed at run time")
        p.set(node.output[0], out)  # e.g. x.view(x.size(0), -1): the -1 follows the pruned width
        return
    if target[1] > 0 and len(out) != 1:
        _hook_entry(p, node, rt, 1, out)
    p.set(node.output[0], out)


def _reshape_moved(p: Propagation, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape of a tensor whose channel axis is not axis 1: allowed when the channel axis survives whole
    (the dims before and after it regroup among themselves); its entry in the target is rewritten."""
    target, rt = _target(p, node, sin)
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    allowzero = int(attrs(node).get("allowzero", 0))
    res = _resolve(sin, target, allowzero)
    if res is None or any(d is None for d in res):
        raise Unsupported("Reshape to an unknown shape")
    for t2, d in enumerate(res):
        if d == len(ids) and _same_product(res[:t2], sin[:t]) and _same_product(res[t2 + 1 :], sin[t + 1 :]):
            break
    else:
        _reshape_split(p, node, ids, t, sin)
        return
    if not _same_product(res[:1], sin[:1]):
        raise Unsupported("Reshape mixes the batch axis")
    if target[t2] == 0 and not allowzero and t2 != t:
        raise Unsupported("Reshape copies another axis into the channel axis")
    if target[t2] > 0 and len(ids) != 1:
        _hook_entry(p, node, rt, t2, ids)
    p.set(node.output[0], ids, t2)


def _reshape_split(p: Propagation, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape that splits the channel axis into (g, C/g) (channel shuffle's first step): ids at the
    same in-group index are united, so every group keeps the same channels and the reshape stays valid;
    the C/g entry of the target is rewritten at surgery."""
    target, rt = _target(p, node, sin)
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    res = _resolve_target(sin, target, int(attrs(node).get("allowzero", 0)))
    if res is None or any(not isinstance(d, int) for d in res[1:]):
        raise Unsupported("Reshape regroups the channel axis")
    for t2 in range(len(res) - 1):
        d0, d1 = res[t2], res[t2 + 1]
        if (isinstance(d0, int) and isinstance(d1, int) and d0 > 1 and d1 > 1 and d0 * d1 == len(ids)
                and _same_product(res[:t2], sin[:t]) and _same_product(res[t2 + 2 :], sin[t + 1 :])):
            break
    else:
        raise Unsupported("Reshape regroups the channel axis")
    if t2 == 0 or not _same_product(res[:1], sin[:1]):
        raise Unsupported("Reshape mixes the batch axis")
    if target[t2] == 0 or target[t2 + 1] == 0:
        raise Unsupported("Reshape copies an input dim into a split channel axis")
    for j in range(d1):
        for i in range(1, d0):
            p.unite([ids[j]], [ids[i * d1 + j]])
    if target[t2 + 1] > 0:
        _hook_entry(p, node, rt, t2 + 1, ids, d0)
    p.set(node.output[0], ids, t2, (d0, d1))


def _reshape_merge(p: Propagation, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape that merges a split channel axis (g, C/g) back into one axis (channel shuffle's last step)."""
    target, rt = _target(p, node, sin)
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    res = _resolve_target(sin, target, int(attrs(node).get("allowzero", 0)))
    if res is None or len(res) <= t or res[t] != len(ids):
        raise Unsupported("Reshape of a split channel axis")
    if not (_same_product(res[:t], sin[:t]) and _same_product(res[t + 1 :], sin[t + 2 :])):
        raise Unsupported("Reshape of a split channel axis")
    if not _same_product(res[:1], sin[:1]) or target[t] == 0:
        raise Unsupported("Reshape of a split channel axis")
    if target[t] > 0:
        _hook_entry(p, node, rt, t, ids)
    p.set(node.output[0], ids, t)


def _target(p: Propagation, node: onnx.NodeProto, sin: list[Any]) -> tuple[list[int] | None, RuntimeShape | None]:
    """The Reshape target as numbers: a constant, or a shape built at run time (Concat of Shape(x)[k] and
    constants: its entries at the analysis size, the batch read as 0); (None, None) when neither."""
    c = p.const(node.input[1])
    if c is not None:
        return [int(v) for v in c.reshape(-1)], None
    rt = runtime_shape(p, node.input[1], sin[0] if sin else None, bool(attrs(node).get("allowzero", 0)))
    return (rt.values, rt) if rt is not None else (None, None)


def _hook_entry(p: Propagation, node: onnx.NodeProto, rt: RuntimeShape | None, index: int, ids: list[int],
                divisor: int = 1) -> None:  # fmt: skip
    """Rewrite entry `index` of the target to the kept width: in the constant target, or in the constant of
    a run-time target that holds it (an entry that is Shape(x)[k] of these channels follows by itself)."""
    if rt is None:
        p.hook(node, ShapeChannel(node.output[0], node.input[1], index, divisor))
        return
    src = rt.channel_source(p, index, ids)
    if src is not None:
        p.hook(node, ShapeChannel(node.output[0], src[0], src[1], divisor))


def _resolve_target(sin: list[Any], target: list[int], allowzero: int) -> list[Any] | None:
    """Output dims of Reshape(sin, target), a leading -1 read as the batch when the rest is static."""
    if target and target[0] == -1 and all(v > 0 for v in target[1:]) and all(isinstance(d, int) for d in sin[1:]):
        if int(np.prod(target[1:])) == int(np.prod(sin[1:])):
            return [sin[0], *target[1:]]
    return _resolve(sin, target, allowzero)


def _resolve(sin: list[Any], target: list[int], allowzero: int) -> list[Any] | None:
    """The output shape of Reshape(sin, target), dims that stay symbolic kept as given."""
    out: list[Any] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            out.append(sin[i] if i < len(sin) else None)
        else:
            out.append(t)
    if -1 in out:
        known = [d for d in sin if isinstance(d, int)]
        if len(known) != len(sin) - (0 if all(isinstance(d, int) for d in sin) else 1):
            return None
        sym = [d for d in sin if not isinstance(d, int)]
        other = [d for d in out if d != -1]
        if sym and sym[0] in other:
            total = int(np.prod(known))
            rest = int(np.prod([d for d in other if isinstance(d, int)]))
            out[out.index(-1)] = total // rest if rest else None
        elif not sym:
            total = int(np.prod(known))
            rest = int(np.prod([d for d in other if isinstance(d, int)]))
            out[out.index(-1)] = total // rest if rest else None
        else:
            return None
    return out


def shape_entries(p: Propagation, name: str) -> list[Any] | None:
    """Entries of a shape tensor: its constant values, or a run-time Concat's (ints and 'batch0')."""
    c = p.const(name)
    if c is not None:
        return [int(v) for v in c.reshape(-1)]
    return _runtime_shape_elems(p, name)


def _runtime_shape_elems(p: Propagation, name: str) -> list[Any] | None:
    """Elements of a Concat-built shape: ints for constants, 'batch0' for Shape(x)[0]; None otherwise."""
    node = p.model.producer.get(name)
    if node is None or node.op_type != "Concat":
        return None
    out: list[Any] = []
    for i in node.input:
        c = p.const(i)
        if c is not None:
            out.extend(int(v) for v in c.reshape(-1))
            continue
        src = p.model.producer.get(i)
        while src is not None and src.op_type in ("Unsqueeze", "Cast", "Squeeze"):
            src = p.model.producer.get(src.input[0])
        if src is None or src.op_type != "Gather":
            return None
        idx = p.const(src.input[1])
        shp = p.model.producer.get(src.input[0])
        axis = int(attrs(src).get("axis", 0))
        if idx is None or int(idx.reshape(-1)[0]) != 0 or shp is None or shp.op_type != "Shape" or axis != 0:
            return None
        out.append("batch0")
    return out


def _same_dim(a: Any, b: Any) -> bool:
    """Two dims that are the same value (equal ints or the same symbol)."""
    return a == b and a is not None


def _same_product(a: list[Any], b: list[Any]) -> bool:
    """Two lists of dims whose products are surely equal (equal static products, the same symbols)."""
    sa = sorted(str(d) for d in a if not isinstance(d, int))
    sb = sorted(str(d) for d in b if not isinstance(d, int))
    pa = int(np.prod([d for d in a if isinstance(d, int)] or [1]))
    pb = int(np.prod([d for d in b if isinstance(d, int)] or [1]))
    return sa == sb and pa == pb
