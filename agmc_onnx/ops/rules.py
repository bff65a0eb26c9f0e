"""Channel propagation rules, one function per op type (see agmc_onnx/ops/__init__.py for the protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

if TYPE_CHECKING:
    from agmc_onnx.groups import Propagator

Rule = Callable[["Propagator", onnx.NodeProto], None]
RULES: dict[str, Rule] = {}
INT_BIG = 2**62


class Unsupported(Exception):
    """Raised by a rule for a case it cannot map; the node's channels get frozen with this reason."""


def rule(*ops: str, any_axis: bool = False, split_aware: bool = False) -> Callable[[Rule], Rule]:
    """Register `fn` as the rule of each op type in `ops`; `any_axis`: it handles a channel axis anywhere
    (otherwise the driver freezes the node when a tracked input carries its channels off axis 1);
    `split_aware`: it handles a channel axis split in two (channel shuffle), which freezes any other rule."""

    def deco(fn: Rule) -> Rule:
        fn.any_axis = any_axis  # type: ignore[attr-defined]
        fn.split_aware = split_aware  # type: ignore[attr-defined]
        for op in ops:
            RULES[op] = fn
        return fn

    return deco


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _inp(node: onnx.NodeProto, i: int) -> str:
    """Name of input i, '' when absent."""
    return node.input[i] if len(node.input) > i else ""


def _tracked(p: Propagator, name: str) -> list[int]:
    """Ids of a tensor that must be tracked (an activation with a channel axis)."""
    ids = p.ids(name)
    if ids is None:
        raise Unsupported(f"input {name!r} has no known channel axis")
    return ids


def _const_or_attr(p: Propagator, node: onnx.NodeProto, idx: int, attr: str) -> list[int] | None:
    """An int list given as attribute `attr` (old opsets) or as constant input `idx` (new ones)."""
    a = attrs(node)
    if attr in a:
        return [int(v) for v in a[attr]]
    name = _inp(node, idx)
    if not name:
        return None
    val = p.const(name)
    if val is None:
        raise Unsupported(f"{attr} of {node.op_type} computed at run time")
    return [int(v) for v in np.asarray(val).reshape(-1)]


def _ax(p: Propagator, name: str) -> int:
    """Position of a tracked tensor's channel axis."""
    return p.axis(name)


def _rank(p: Propagator, name: str) -> int | None:
    """Rank of a tensor, None when unknown."""
    s = p.shape(name)
    return None if s is None else len(s)


# ---------------------------------------------------------------- passthrough


@rule(
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Gelu",
    "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Erf", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Cast", "Clip", "Dropout", "Shrink",
    "IsNaN", "IsInf", "Not", "CastLike", "Swish", any_axis=True,
)
def passthrough(p: Propagator, node: onnx.NodeProto) -> None:
    """Element-wise on one activation: every output carries the input's channel ids on the same axis."""
    ids = _tracked(p, node.input[0])
    for i in node.input[1:]:
        if i and p.ids(i) is not None:
            raise Unsupported(f"second activation input {i!r}")
    for o in node.output:
        if o:
            p.set(o, ids, _ax(p, node.input[0]))


@rule("AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def pool(p: Propagator, node: onnx.NodeProto) -> None:
    """Pools over the axes after axis 1 (NCHW only): channels pass through."""
    ids = _tracked(p, node.input[0])
    p.set(node.output[0], ids)


@rule("MaxPool")
def maxpool(p: Propagator, node: onnx.NodeProto) -> None:
    """MaxPool passes channels through; a used Indices output encodes channel positions, so freeze."""
    if len(node.output) > 1 and node.output[1] and p.has_consumers(node.output[1]):
        raise Unsupported("MaxPool indices output is used")
    p.set(node.output[0], _tracked(p, node.input[0]))


@rule("Shape", "Size")
def shape_of(p: Propagator, node: onnx.NodeProto) -> None:
    """Shape/Size read only the shape, which is computed at run time: no channels flow."""


@rule("BatchNormalization", "InstanceNormalization")
def norm(p: Propagator, node: onnx.NodeProto) -> None:
    """Per-channel norm: parameters are 'norm' members on axis 0, output copies the ids."""
    ids = _tracked(p, node.input[0])
    params = [i for i in node.input[1:] if i]
    for name in params:
        val = p.const(name)
        if val is None or val.ndim != 1 or val.shape[0] != len(ids):
            raise Unsupported(f"{node.op_type} parameter {name!r} is not a per-channel constant")
    for name in params:
        p.member(name, node, 0, "norm", ids)
    p.set(node.output[0], ids)
    for o in node.output[1:]:
        if o and p.has_consumers(o):
            raise Unsupported("training-mode BatchNormalization outputs are used")


@rule("LayerNormalization", any_axis=True)
def layernorm(p: Propagator, node: onnx.NodeProto) -> None:
    """LayerNorm over axes `axis`.. that exclude the channel axis passes channels through; over it, it
    mixes channels (its statistics change when channels go), so it freezes them."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    axis = int(attrs(node).get("axis", -1))
    if r is None or (axis % r) <= t:
        raise Unsupported("LayerNormalization normalises over the channel axis")
    p.set(node.output[0], ids, t)
    for o in node.output[1:]:
        if o and p.has_consumers(o):
            raise Unsupported("LayerNormalization statistics outputs are used")


@rule("LpNormalization", any_axis=True)
def lpnorm(p: Propagator, node: onnx.NodeProto) -> None:
    """Lp normalisation over a non-channel axis passes channels through."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    axis = int(attrs(node).get("axis", -1))
    if r is None or axis % r in (0, t):
        raise Unsupported("LpNormalization over the channel axis")
    p.set(node.output[0], ids, t)


@rule("Softmax", "LogSoftmax", "Hardmax", any_axis=True)
def softmax(p: Propagator, node: onnx.NodeProto) -> None:
    """Softmax over a spatial axis passes channels through; over channels (or flattened) it freezes."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    if r is None:
        raise Unsupported("unknown rank")
    default = -1 if p.opset >= 13 else 1
    axis = int(attrs(node).get("axis", default)) % r
    if axis == 0 or (axis == t if p.opset >= 13 else axis <= t):
        raise Unsupported(f"{node.op_type} over the channel axis")
    p.set(node.output[0], ids, t)


@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", any_axis=True)
def reduce(p: Propagator, node: onnx.NodeProto) -> None:
    """Reductions over spatial axes pass channels through; over batch or channels they freeze."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    axes = _const_or_attr(p, node, 1, "axes")
    if r is None or not axes:
        raise Unsupported(f"{node.op_type} over all axes")
    axes = [a % r for a in axes]
    if 0 in axes or t in axes:
        raise Unsupported(f"{node.op_type} over the channel axis")
    keepdims = int(attrs(node).get("keepdims", 1))
    p.set(node.output[0], ids, t if keepdims else t - sum(a < t for a in set(axes)))


@rule("Pad", any_axis=True)
def pad(p: Propagator, node: onnx.NodeProto) -> None:
    """Pad without padding the batch or channel axes passes channels through."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    pads = _const_or_attr(p, node, 1, "pads")
    if r is None or pads is None:
        raise Unsupported("Pad with unknown pads")
    axes = _const_or_attr(p, node, 3, "axes") if len(node.input) > 3 and node.input[3] else list(range(r))
    n = len(axes or [])
    for k, a in enumerate(axes or []):
        if a % r in (0, t) and (pads[k] != 0 or pads[k + n] != 0):
            raise Unsupported("Pad on the channel axis")
    p.set(node.output[0], ids, t)


@rule("Resize", "Upsample")
def resize(p: Propagator, node: onnx.NodeProto) -> None:
    """Resize of spatial axes passes channels through; a constant `sizes` gets its channel entry rewritten."""
    ids = _tracked(p, node.input[0])
    if node.op_type == "Upsample" and "scales" in attrs(node):
        scales = [float(s) for s in attrs(node)["scales"]]
    else:
        sidx = 1 if node.op_type == "Upsample" or p.opset < 11 else 2
        scales_name = _inp(node, sidx)
        sizes_name = _inp(node, 3) if node.op_type == "Resize" and p.opset >= 11 else ""
        if scales_name and p.const(scales_name) is not None and p.const(scales_name).size > 0:
            scales = [float(s) for s in p.const(scales_name).reshape(-1)]
        elif sizes_name:
            sizes = p.const(sizes_name)
            if sizes is None:
                raise Unsupported("Resize sizes computed at run time")
            if "axes" in attrs(node):
                raise Unsupported("Resize with axes")
            if int(sizes.reshape(-1)[1]) != len(ids):
                raise Unsupported("Resize changes the channel count")
            p.hook(node, "resize_sizes", tensor=node.input[0], sizes=sizes_name)
            p.set(node.output[0], ids)
            return
        else:
            raise Unsupported("Resize scales computed at run time")
    if "axes" in attrs(node):
        raise Unsupported("Resize with axes")
    if len(scales) < 2 or scales[0] != 1.0 or scales[1] != 1.0:
        raise Unsupported("Resize scales the batch or channel axis")
    p.set(node.output[0], ids)


@rule("Transpose", any_axis=True, split_aware=True)
def transpose(p: Propagator, node: onnx.NodeProto) -> None:
    """Transpose moves the channel axis to where `perm` puts it (NCHW <-> NHWC, tokens); a channel axis
    split in two (g, C/g) may only have its two halves swapped (the shuffle: a fixed permutation of ids)."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    perm = attrs(node).get("perm")
    if perm is None:
        if r is None:
            raise Unsupported("Transpose of unknown rank")
        perm = list(range(r))[::-1]
    perm = [int(a) for a in perm]
    if t not in perm:
        raise Unsupported("Transpose perm does not match the rank")
    split = p.split(node.input[0])
    if split is None:
        p.set(node.output[0], ids, perm.index(t))
        return
    d0, d1 = split
    others = [k for k in range(len(perm)) if k not in (t, t + 1)]
    if any(perm[k] != k for k in others):
        raise Unsupported("Transpose moves a split channel axis")
    if perm[t] == t and perm[t + 1] == t + 1:
        p.set(node.output[0], ids, t, split)
    elif perm[t] == t + 1 and perm[t + 1] == t:  # channel shuffle: position (i, j) -> (j, i)
        grid = np.array(ids, dtype=np.int64).reshape(d0, d1)
        p.set(node.output[0], [int(v) for v in grid.T.reshape(-1)], t, (d1, d0))
    else:
        raise Unsupported("Transpose of a split channel axis")


@rule("Squeeze", "Unsqueeze", any_axis=True)
def squeeze(p: Propagator, node: onnx.NodeProto) -> None:
    """(Un)squeezing axes other than the batch and channel axes; the channel axis shifts with them."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    axes = _const_or_attr(p, node, 1, "axes")
    rin, rout = _rank(p, node.input[0]), _rank(p, node.output[0])
    if axes is None:
        shape = p.shape(node.input[0])
        if node.op_type == "Unsqueeze" or shape is None or any(not isinstance(d, int) for d in shape[1:]):
            raise Unsupported(f"{node.op_type} without axes")
        if not isinstance(shape[0], int) or shape[0] == 1 or shape[t] == 1:
            raise Unsupported("Squeeze without axes of a tensor whose batch or channel axis may be 1")
        axes = [k for k, d in enumerate(shape) if d == 1]
    r = rout if node.op_type == "Unsqueeze" else rin
    if r is None:
        raise Unsupported(f"{node.op_type} of unknown rank")
    axes = sorted({a % r for a in axes})
    if node.op_type == "Squeeze":
        if 0 in axes or t in axes:
            raise Unsupported("Squeeze of the batch or channel axis")
        new_t = t - sum(a < t for a in axes)
    else:
        if 0 in axes:
            raise Unsupported("Unsqueeze before the batch axis")
        kept = [k for k in range(r) if k not in axes]  # output positions of the input's axes, in order
        if t >= len(kept):
            raise Unsupported("Unsqueeze axes do not match the rank")
        new_t = kept[t]
    p.set(node.output[0], ids, new_t)


@rule("Tile", any_axis=True)
def tile(p: Propagator, node: onnx.NodeProto) -> None:
    """Tiling spatial axes passes channels through."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    reps = p.const(node.input[1])
    if reps is None or len(reps) <= t or int(reps[t]) != 1 or int(reps[0]) != 1:
        raise Unsupported("Tile repeats the batch or channel axis")
    p.set(node.output[0], ids, t)


@rule("Expand", any_axis=True)
def expand(p: Propagator, node: onnx.NodeProto) -> None:
    """Expanding spatial axes passes channels through; the channel entry of the shape is rewritten."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    shape = p.const(node.input[1])
    rin, rout = _rank(p, node.input[0]), _rank(p, node.output[0])
    if shape is None or rin is None or rout is None or rin != rout or shape.size != rin:
        raise Unsupported("Expand with a run-time shape or rank change")
    if int(shape[t]) not in (1, len(ids)):
        raise Unsupported("Expand broadcasts the channel axis")
    if int(shape[t]) == len(ids) and len(ids) != 1:
        p.hook(node, "shape_channel", tensor=node.output[0], shape=node.input[1], index=t)
    p.set(node.output[0], ids, t)


# ---------------------------------------------------------------- layers that create channels


@rule("Conv")
def conv(p: Propagator, node: onnx.NodeProto) -> None:
    """Conv: new output ids; depthwise copies the input ids; grouped unites ids per in-group index."""
    x = _tracked(p, node.input[0])
    w = p.const(_inp(node, 1))
    if w is None:
        raise Unsupported("Conv weight computed at run time")
    g = int(attrs(node).get("group", 1))
    co, ci = int(w.shape[0]), int(w.shape[1])
    if ci * g != len(x) or co % g:
        raise Unsupported("Conv weight does not match its input channels")
    b = _inp(node, 2)
    if b and (p.const(b) is None or p.const(b).shape != (co,)):
        raise Unsupported("Conv bias is not a constant")
    if g == 1:
        out = p.new(co, node)
        p.member(node.input[1], node, 0, "producer", out)
        p.member(node.input[1], node, 1, "consumer", x)
        if b:
            p.member(b, node, 0, "producer", out)
    elif ci == 1:  # depthwise (channel multiplier co/g)
        m = co // g
        out = [x[c] for c in range(g) for _ in range(m)]
        p.member(node.input[1], node, 0, "norm", out)
        if b:
            p.member(b, node, 0, "norm", out)
        p.hook(node, "group_from_input", tensor=node.input[0], per_group=1)
    else:  # grouped: each conv group must keep the same channels, so unite in-group positions
        cog = co // g
        for k in range(ci):
            for gi in range(1, g):
                p.unite([x[k]], [x[gi * ci + k]])
        fresh = p.new(cog, node)
        out = [fresh[j] for _ in range(g) for j in range(cog)]
        p.member(node.input[1], node, 0, "producer", out)
        p.member(node.input[1], node, 1, "consumer", x[:ci])
        if b:
            p.member(b, node, 0, "producer", out)
    p.set(node.output[0], out)


@rule("ConvTranspose")
def conv_transpose(p: Propagator, node: onnx.NodeProto) -> None:
    """ConvTranspose (weight [C_in, C_out/g, k...]): like Conv with the weight axes swapped."""
    x = _tracked(p, node.input[0])
    w = p.const(_inp(node, 1))
    if w is None:
        raise Unsupported("ConvTranspose weight computed at run time")
    g = int(attrs(node).get("group", 1))
    if int(w.shape[0]) != len(x) or len(x) % g:
        raise Unsupported("ConvTranspose weight does not match its input channels")
    cog = int(w.shape[1])
    b = _inp(node, 2)
    if b and p.const(b) is None:
        raise Unsupported("ConvTranspose bias is not a constant")
    if g == 1:
        out = p.new(cog, node)
        p.member(node.input[1], node, 0, "consumer", x)
        p.member(node.input[1], node, 1, "producer", out)
    elif len(x) == g:  # depthwise
        out = [x[c] for c in range(g) for _ in range(cog)]
        p.member(node.input[1], node, 0, "norm", x)
        p.hook(node, "group_from_input", tensor=node.input[0], per_group=1)
    else:
        cig = len(x) // g
        for k in range(cig):
            for gi in range(1, g):
                p.unite([x[k]], [x[gi * cig + k]])
        fresh = p.new(cog, node)
        out = [fresh[j] for _ in range(g) for j in range(cog)]
        p.member(node.input[1], node, 0, "consumer", x)
        p.member(node.input[1], node, 1, "producer", fresh)
    if b:
        p.member(b, node, 0, "producer" if g == 1 or len(x) != g else "norm", out)
    p.set(node.output[0], out)


def _bias_member(p: Propagator, node: onnx.NodeProto, name: str, out: list[int]) -> None:
    """Gemm's C: per-output-feature when its last axis has N entries; a scalar otherwise."""
    c = p.const(name)
    if c is None:
        raise Unsupported("Gemm C computed at run time")
    if c.ndim >= 1 and c.shape[-1] == len(out) and len(out) > 1:
        p.member(name, node, c.ndim - 1, "producer", out)
    elif c.size != 1 and (c.ndim == 0 or c.shape[-1] != 1):
        raise Unsupported("Gemm C shape")


@rule("Gemm")
def gemm(p: Propagator, node: onnx.NodeProto) -> None:
    """Gemm with a constant B: new output features; B's input axis consumes A's features."""
    a = attrs(node)
    if int(a.get("transA", 0)):
        raise Unsupported("Gemm with transA")
    x = _tracked(p, node.input[0])
    w = p.const(node.input[1])
    if w is None or w.ndim != 2:
        raise Unsupported("Gemm B computed at run time")
    kax, nax = (1, 0) if int(a.get("transB", 0)) else (0, 1)
    if w.shape[kax] != len(x):
        raise Unsupported("Gemm B does not match A's features")
    out = p.new(int(w.shape[nax]), node)
    p.member(node.input[1], node, kax, "consumer", x)
    p.member(node.input[1], node, nax, "producer", out)
    if _inp(node, 2):
        _bias_member(p, node, node.input[2], out)
    p.set(node.output[0], out)


@rule("MatMul", any_axis=True)
def matmul(p: Propagator, node: onnx.NodeProto) -> None:
    """MatMul by a constant 2-D B (a Linear): channels on A's last axis are consumed by B's rows and B's
    columns are new channels on the output's last axis; channels on another axis of A pass through."""
    x = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    if p.ids(node.input[1]) is not None:
        raise Unsupported("MatMul of two activations (attention)")
    w = p.const(node.input[1])
    r = _rank(p, node.input[0])
    if w is None or w.ndim != 2 or r is None or r < 2:
        raise Unsupported("MatMul B is not a constant matrix")
    if t == r - 1:
        if w.shape[0] != len(x):
            raise Unsupported("MatMul B does not match A's features")
        out = p.new(int(w.shape[1]), node)
        p.member(node.input[1], node, 0, "consumer", x)
        p.member(node.input[1], node, 1, "producer", out)
        p.set(node.output[0], out, r - 1)
    else:
        p.set(node.output[0], x, t)


# ---------------------------------------------------------------- element-wise over several tensors


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less",
      "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift", any_axis=True)
def elementwise(p: Propagator, node: onnx.NodeProto) -> None:
    """Broadcasting element-wise op: unite full-width activations; per-channel constants are norm members."""
    out_name = node.output[0]
    inputs = [i for i in node.input if i]
    ranks = [_rank(p, i) for i in inputs]
    r_out = _rank(p, out_name)
    if r_out is None:
        if any(r is None for r in ranks):
            raise Unsupported("unknown ranks")
        r_out = max(ranks)  # type: ignore[type-var]
    if r_out < 2:
        raise Unsupported("rank below 2")
    full: list[list[int]] = []
    consts: list[tuple[str, int]] = []
    # the channel axis in output coordinates: where the full-width tracked inputs carry their ids
    wide = [i for i in inputs if p.ids(i) is not None and len(p.ids(i)) > 1]  # type: ignore[arg-type]
    for name in wide:
        if _rank(p, name) != r_out:
            raise Unsupported(f"{name!r} broadcast along the channel axis")
    axes_out = {_ax(p, i) for i in wide}
    if len(axes_out) > 1:
        raise Unsupported("operands carry channels on different axes")
    if axes_out:
        t_out = axes_out.pop()
    else:
        first = next(i for i in inputs if p.ids(i) is not None)
        t_out = _ax(p, first) + r_out - (_rank(p, first) or r_out)
    width = len(p.ids(wide[0])) if wide else None  # type: ignore[arg-type]
    for name in inputs:
        shape = p.shape(name)
        ids = p.ids(name)
        if shape is None:
            raise Unsupported(f"unknown shape of {name!r}")
        ax = t_out - (r_out - len(shape))
        if ax < 0 or shape[ax] == 1:
            continue  # broadcast along the channel axis (a single channel or none)
        if ids is not None:
            if len(shape) != r_out or len(ids) != width or _ax(p, name) != ax:
                raise Unsupported(f"{name!r} does not line up with the channel axis")
            full.append(ids)
        elif p.const(name) is not None:
            consts.append((name, ax))
        else:
            raise Unsupported(f"per-channel operand {name!r} computed at run time")
    if not full:
        if consts:
            p.opaque(out_name, f"channels created by broadcasting in {node.op_type} {node.name}", t_out)
            return
        raise Unsupported("no operand carries the channel axis")
    out = full[0]
    for other in full[1:]:
        p.unite(out, other)
    for name, ax in consts:
        if p.const(name).shape[ax] != len(out):
            raise Unsupported(f"constant {name!r} does not match the channels")
        p.member(name, node, ax, "norm", out)
    p.set(out_name, out, t_out)


# ---------------------------------------------------------------- channel-axis layout


@rule("Concat", any_axis=True)
def concat(p: Propagator, node: onnx.NodeProto) -> None:
    """Concat on the channel axis joins the id lists; on another axis it unites them."""
    r = _rank(p, node.output[0])
    inputs = [i for i in node.input if i]
    tracked = [n for n in inputs if p.ids(n) is not None]
    if r is None or r < 2:
        raise Unsupported("Concat of unknown rank")
    axis = int(attrs(node).get("axis", 1)) % r
    t = _ax(p, tracked[0])
    if any(_ax(p, n) != t for n in tracked):
        raise Unsupported("Concat inputs carry channels on different axes")
    if axis == t:
        out: list[int] = []
        for name in inputs:
            ids = p.ids(name)
            if ids is None:
                raise Unsupported(f"Concat of a non-activation {name!r} on the channel axis")
            out += ids
        p.set(node.output[0], out, t)
        return
    base = p.ids(tracked[0])
    assert base is not None
    for other in tracked[1:]:
        ids = p.ids(other)
        assert ids is not None
        if len(ids) != len(base):
            raise Unsupported("Concat inputs differ in channels")
        p.unite(base, ids)
    for name in inputs:
        if p.ids(name) is None:
            c = p.const(name)
            if c is None or c.ndim != r:
                raise Unsupported(f"Concat operand {name!r} computed at run time")
            if c.shape[t] != len(base):
                raise Unsupported(f"Concat operand {name!r} does not match the channels")
            p.member(name, node, t, "norm", base)
    p.set(node.output[0], base, t)


@rule("Split", any_axis=True)
def split(p: Propagator, node: onnx.NodeProto) -> None:
    """Split on the channel axis cuts the id list (sizes rewritten at surgery); otherwise copies it."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    axis = int(attrs(node).get("axis", 0)) % (r or 1)
    outs = [o for o in node.output]
    if axis != t:
        if axis == 0:
            raise Unsupported("Split on the batch axis")
        for o in outs:
            if o:
                p.set(o, ids, t)
        return
    sizes = _const_or_attr(p, node, 1, "split")
    if sizes is None:
        n = len(outs)
        if len(ids) % n:
            raise Unsupported("uneven Split without sizes")
        sizes = [len(ids) // n] * n
    if sum(sizes) != len(ids) or len(sizes) != len(outs):
        raise Unsupported("Split sizes do not match the channels")
    off = 0
    for o, s in zip(outs, sizes, strict=True):
        if o:
            p.set(o, ids[off : off + s], t)
        off += s
    p.hook(node, "split_sizes", tensor=node.input[0], sizes=sizes)


def _slice_positions(n: int, start: int, end: int, step: int) -> list[int]:
    """Positions ONNX Slice takes from an axis of length n (negative bounds and steps as the spec clamps them)."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        return list(range(max(0, min(n, start)), max(0, min(n, end)), step))
    return list(range(max(0, min(n - 1, start)), max(-1, min(n - 1, end)), step))


@rule("Slice", any_axis=True)
def slice_(p: Propagator, node: onnx.NodeProto) -> None:
    """Slice on the channel axis cuts the id list: step 1 rewrites starts/ends at surgery; any other step
    (strided or reversed, the only sliced axis) becomes a Gather of the kept positions."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    if r is None:
        raise Unsupported("Slice of unknown rank")
    starts = _const_or_attr(p, node, 1, "starts")
    ends = _const_or_attr(p, node, 2, "ends")
    axes = _const_or_attr(p, node, 3, "axes") if (_inp(node, 3) or "axes" in attrs(node)) else None
    steps = _const_or_attr(p, node, 4, "steps") if _inp(node, 4) else None
    if starts is None or ends is None:
        raise Unsupported("Slice without starts/ends")
    axes = list(range(len(starts))) if axes is None else axes
    axes = [a % r for a in axes]
    if 0 in axes:
        raise Unsupported("Slice on the batch axis")
    if t not in axes:
        p.set(node.output[0], ids, t)
        return
    k = axes.index(t)
    step = 1 if steps is None else steps[k]
    n = len(ids)
    pos = _slice_positions(n, starts[k], ends[k], step)
    if not pos:
        raise Unsupported("empty Slice")
    p.set(node.output[0], [ids[i] for i in pos], t)
    if step == 1:
        p.hook(node, "slice_channel", tensor=node.input[0], start=pos[0], end=pos[-1] + 1, index=k)
    elif len(axes) == 1:
        p.hook(node, "slice_to_gather", tensor=node.input[0], positions=pos, axis=t)
    else:
        raise Unsupported("strided Slice on the channel axis together with other axes")


@rule("Gather", any_axis=True)
def gather(p: Propagator, node: onnx.NodeProto) -> None:
    """Gather with constant indices: on another axis the channel axis shifts; on the channel axis a 1-D
    index picks ids (rewritten at surgery), a scalar index keeps one channel (frozen: it must stay)."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    r = _rank(p, node.input[0])
    idx = p.const(_inp(node, 1))
    if idx is None or r is None:
        raise Unsupported("Gather indices computed at run time")
    axis = int(attrs(node).get("axis", 0)) % r
    if axis == 0:
        raise Unsupported("Gather on the batch axis")
    if axis != t:
        p.set(node.output[0], ids, t if axis > t else t - 1 + idx.ndim)
        return
    n = len(ids)
    flat = [int(v) % n for v in idx.reshape(-1)] if n else []
    if any(not -n <= int(v) < n for v in idx.reshape(-1)):
        raise Unsupported("Gather index out of range")
    if idx.ndim == 0:
        p.freeze([ids[flat[0]]], f"Gather {node.name}: reads one channel by index")
        p.hook(node, "gather_channel", tensor=node.input[0], positions=flat, indices=node.input[1])
        return
    if idx.ndim != 1:
        raise Unsupported("Gather on the channel axis with multi-dimensional indices")
    p.set(node.output[0], [ids[i] for i in flat], t)
    p.hook(node, "gather_channel", tensor=node.input[0], positions=flat, indices=node.input[1])


@rule("Flatten", any_axis=True)
def flatten(p: Propagator, node: onnx.NodeProto) -> None:
    """Flatten(axis=1): each feature belongs to the channel at its channel-axis index (c*HW+s for NCHW,
    s*C+c for NHWC), so each id repeats once per position of the other flattened axes."""
    ids = _tracked(p, node.input[0])
    t = _ax(p, node.input[0])
    shape = p.shape(node.input[0])
    axis = int(attrs(node).get("axis", 1))
    if shape is None or axis % max(len(shape), 1) != 1 or t < 1:
        raise Unsupported("Flatten not at axis 1")
    rest = shape[1:]
    if any(not isinstance(d, int) for d in rest):
        raise Unsupported("Flatten of a non-static spatial size")
    if rest[t - 1] != len(ids):
        raise Unsupported("Flatten input does not match its channels")
    chan = np.indices(rest).reshape(len(rest), -1)[t - 1] if rest else np.zeros(1, dtype=np.int64)
    p.set(node.output[0], [ids[int(c)] for c in chan])


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


def _reshape_moved(p: Propagator, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape of a tensor whose channel axis is not axis 1: allowed when the channel axis survives whole
    (the dims before and after it regroup among themselves); its entry in the target is rewritten."""
    target = p.const(node.input[1])
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    target = [int(v) for v in target.reshape(-1)]
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
        p.hook(node, "shape_channel", tensor=node.output[0], shape=node.input[1], index=t2)
    p.set(node.output[0], ids, t2)


def _resolve_target(sin: list[Any], target: list[int], allowzero: int) -> list[Any] | None:
    """Output dims of Reshape(sin, target), a leading -1 read as the batch when the rest is static."""
    if target and target[0] == -1 and all(v > 0 for v in target[1:]) and all(isinstance(d, int) for d in sin[1:]):
        if int(np.prod(target[1:])) == int(np.prod(sin[1:])):
            return [sin[0], *target[1:]]
    return _resolve(sin, target, allowzero)


def _reshape_split(p: Propagator, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape that splits the channel axis into (g, C/g) (channel shuffle's first step): ids at the
    same in-group index are united, so every group keeps the same channels and the reshape stays valid;
    the C/g entry of the target is rewritten at surgery."""
    target = p.const(node.input[1])
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    target = [int(v) for v in target.reshape(-1)]
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
        p.hook(node, "shape_channel", tensor=node.output[0], shape=node.input[1], index=t2 + 1, divisor=d0)
    p.set(node.output[0], ids, t2, (d0, d1))


def _reshape_merge(p: Propagator, node: onnx.NodeProto, ids: list[int], t: int, sin: list[Any]) -> None:
    """Reshape that merges a split channel axis (g, C/g) back into one axis (channel shuffle's last step)."""
    target = p.const(node.input[1])
    if target is None:
        raise Unsupported("Reshape target shape computed at run time")
    target = [int(v) for v in target.reshape(-1)]
    res = _resolve_target(sin, target, int(attrs(node).get("allowzero", 0)))
    if res is None or len(res) <= t or res[t] != len(ids):
        raise Unsupported("Reshape of a split channel axis")
    if not (_same_product(res[:t], sin[:t]) and _same_product(res[t + 1 :], sin[t + 2 :])):
        raise Unsupported("Reshape of a split channel axis")
    if not _same_product(res[:1], sin[:1]) or target[t] == 0:
        raise Unsupported("Reshape of a split channel axis")
    if target[t] > 0:
        p.hook(node, "shape_channel", tensor=node.output[0], shape=node.input[1], index=t)
    p.set(node.output[0], ids, t)


@rule("Reshape", any_axis=True, split_aware=True)
def reshape(p: Propagator, node: onnx.NodeProto) -> None:
    """Reshape that flattens [N,C,...] into [N,C*S] or keeps [N,C] leading (or, for a channel axis
    elsewhere, keeps it whole), or splits / merges the channel axis for a channel shuffle; anything
    else freezes."""
    ids = _tracked(p, node.input[0])
    sin, sout = p.shape(node.input[0]), p.shape(node.output[0])
    if sin is None or len(sin) < 2:
        raise Unsupported("Reshape of unknown shape")
    if p.split(node.input[0]) is not None:
        _reshape_merge(p, node, ids, _ax(p, node.input[0]), sin)
        return
    if _ax(p, node.input[0]) != 1:
        _reshape_moved(p, node, ids, _ax(p, node.input[0]), sin)
        return
    target = p.const(node.input[1])
    if target is not None:
        target = [int(v) for v in target.reshape(-1)]
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
        p.hook(node, "shape_channel", tensor=node.output[0], shape=node.input[1], index=1)
    p.set(node.output[0], out)


def _runtime_shape_elems(p: Propagator, name: str) -> list[Any] | None:
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
