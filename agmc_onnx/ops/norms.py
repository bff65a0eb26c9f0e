"""Statistics over channels: LayerNormalization over the channel axis (the transformer's residual stream,
ConvNeXt's channels-last LN) and reductions over the channel axis alone (LayerNorm and RMSNorm decomposed
by older exporters into ReduceMean/Sub/Pow/Sqrt/Div).

Removing a channel that such a statistic reads changes the statistic: the pruned network normalises over
the kept channels only. So these rules do not freeze the channels: they record the node as a statistic of
them (`p.statistic`) and the pruned network is the original with those channels REMOVED, not masked.
`masked_statistic` writes that network at full width for the oracle (agmc_onnx.surgery.mask): the node
rewritten so that its statistic reads the kept channels only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from agmc_onnx.ops.common import attrs, const_or_attr, rank, tracked
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported, rule

# reductions that, over the channel axis alone with keepdims=1, are a statistic of the channels (a max or a
# product is not a normaliser: those stay frozen)
STAT_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1")


@rule("LayerNormalization", any_axis=True)
def layernorm(p: Propagation, node: onnx.NodeProto) -> None:
    """LayerNorm over axes after the channel axis passes channels through; over the channel axis alone (the
    last axis: tokens [B, N, C], channels-last [B, H, W, C]) its scale and bias are per-channel 'norm'
    members and the node is a statistic of the channels; over the channel axis and others it freezes."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    if r is None:
        raise Unsupported("LayerNormalization of unknown rank")
    axis = int(attrs(node).get("axis", -1)) % r
    if any(o and p.has_consumers(o) for o in node.output[1:]):
        raise Unsupported("LayerNormalization statistics outputs are used")
    if axis > t:
        p.set(node.output[0], ids, t)
        return
    if not axis == t == r - 1:
        raise Unsupported("LayerNormalization normalises over the channel axis and other axes")
    for name in node.input[1:3]:
        if not name:
            continue
        c = p.const(name)
        if c is None:
            raise Unsupported(f"LayerNormalization parameter {name!r} computed at run time")
        if c.size == 1:
            continue  # one scale for every channel: nothing to slice
        if c.shape[-1] != len(ids) or c.size != len(ids):
            raise Unsupported(f"LayerNormalization parameter {name!r} is not per-channel")
        p.member(name, node, c.ndim - 1, "norm", ids)
    p.statistic(ids, node)
    p.set(node.output[0], ids, t)


def reduce_statistic(p: Propagation, node: onnx.NodeProto) -> bool:
    """A reduction over the channel axis alone with keepdims=1 (a decomposed LayerNorm's mean and variance):
    record it as a statistic and leave its output untracked (a per-position value broadcast back over the
    channels). False when the node is not one."""
    if node.op_type not in STAT_REDUCTIONS:
        return False
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    axes = const_or_attr(p, node, 1, "axes")
    if r is None or not axes or int(attrs(node).get("keepdims", 1)) != 1 or p.split(node.input[0]) is not None:
        return False
    if sorted({a % r for a in axes}) != [t] or t == 0:
        return False
    p.statistic(ids, node)
    return True


# ------------------------------------------------------------------------------------------------------
# The oracle's form: a statistic node rewritten to read only the kept channels, at full width.


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    """An initializer."""
    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def _reduce_sum(x: str, out: str, axes: list[int], opset: int, prefix: str) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """ReduceSum(x, axes, keepdims=1) in the form the opset wants (axes as input from 13)."""
    if opset >= 13:
        name = f"{prefix}_axes"
        return helper.make_node("ReduceSum", [x, name], [out], name=f"{prefix}_sum", keepdims=1), [
            _const(name, np.array(axes, dtype=np.int64))]
    return helper.make_node("ReduceSum", [x], [out], name=f"{prefix}_sum", axes=axes, keepdims=1), []


def masked_statistic(node: onnx.NodeProto, keep: np.ndarray, axis: int, rank_: int, dtype: np.dtype,
                     opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes (and constants) that compute what `node` computes with its statistic over the kept channels
    only (`keep`: the kept positions of its input's channel axis `axis`); same inputs and outputs, full width,
    values at removed positions unspecified (every consumer of them is zeroed by the mask)."""
    p = f"{node.name}__kept"
    x, out = node.input[0], node.output[0]
    shape = [1] * rank_
    shape[axis] = len(keep)
    m = keep.astype(dtype).reshape(shape)
    k = int(keep.sum())
    inits = [_const(f"{p}_m", m)]
    nodes = [helper.make_node("Mul", [x, f"{p}_m"], [f"{p}_xm"], name=f"{p}_mask")]
    if node.op_type != "LayerNormalization":
        rewritten = onnx.NodeProto()
        rewritten.CopyFrom(node)
        rewritten.name = f"{p}_reduce"
        rewritten.input[0] = f"{p}_xm"
        if node.op_type != "ReduceMean":
            rewritten.output[0] = out
            return nodes + [rewritten], inits
        rewritten.output[0] = f"{p}_mean_all"  # the mean over C of the masked input: scale by C / kept
        inits.append(_const(f"{p}_scale", np.array(len(keep) / k, dtype=dtype)))
        return nodes + [rewritten, helper.make_node("Mul", [f"{p}_mean_all", f"{p}_scale"], [out], name=f"{p}_rescale")], inits
    a = attrs(node)
    eps = float(a.get("epsilon", 1e-5))
    inv = _const(f"{p}_inv", np.array(1.0 / k, dtype=dtype))
    eps_c = _const(f"{p}_eps", np.array(eps, dtype=dtype))
    sum1, i1 = _reduce_sum(f"{p}_xm", f"{p}_s1", [axis], opset, f"{p}_1")
    sum2, i2 = _reduce_sum(f"{p}_dm2", f"{p}_s2", [axis], opset, f"{p}_2")
    nodes += [
        sum1,
        helper.make_node("Mul", [f"{p}_s1", f"{p}_inv"], [f"{p}_mean"], name=f"{p}_mean"),
        helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"], name=f"{p}_sub"),
        helper.make_node("Mul", [f"{p}_d", f"{p}_m"], [f"{p}_dm"], name=f"{p}_dmask"),
        helper.make_node("Mul", [f"{p}_dm", f"{p}_dm"], [f"{p}_dm2"], name=f"{p}_sq"),
        sum2,
        helper.make_node("Mul", [f"{p}_s2", f"{p}_inv"], [f"{p}_var"], name=f"{p}_var"),
        helper.make_node("Add", [f"{p}_var", f"{p}_eps"], [f"{p}_vare"], name=f"{p}_addeps"),
        helper.make_node("Sqrt", [f"{p}_vare"], [f"{p}_std"], name=f"{p}_sqrt"),
        helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_norm"], name=f"{p}_div"),
    ]
    scaled = f"{p}_norm"
    if len(node.input) > 1 and node.input[1]:
        nodes.append(helper.make_node("Mul", [scaled, node.input[1]], [f"{p}_scaled"], name=f"{p}_scale"))
        scaled = f"{p}_scaled"
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [scaled, node.input[2]], [out], name=f"{p}_shift"))
    else:
        nodes.append(helper.make_node("Identity", [scaled], [out], name=f"{p}_out"))
    return nodes, inits + [inv, eps_c] + i1 + i2
