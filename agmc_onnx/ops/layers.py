"""Layers that hold channels in their parameters: Conv, ConvTranspose, Gemm, MatMul (create or consume
channels) and the per-channel norms (BatchNormalization, InstanceNormalization, LpNormalization; LayerNorm,
a statistic over the channels, is in ops/norms.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from agmc_onnx.ops import attention
from agmc_onnx.ops.common import attrs, inp, rank, tracked
from agmc_onnx.ops.context import Propagation, Surgery
from agmc_onnx.ops.registry import Unsupported, rule

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class DepthwiseGroups:
    """Depthwise Conv/ConvTranspose: `group` becomes the kept input channels of `tensor` per `per_group`."""

    tensor: str
    per_group: int = 1

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Set the `group` attribute to the kept input width."""
        node.attrs["group"] = int(s.new_len(self.tensor) // self.per_group)


@rule("Conv")
def conv(p: Propagation, node: onnx.NodeProto) -> None:
    """Conv: new output ids; depthwise copies the input ids; grouped unites ids per in-group index."""
    x = tracked(p, node.input[0])
    w = p.const(inp(node, 1))
    if w is None:
        raise Unsupported("Conv weight computed at run time")
    g = int(attrs(node).get("group", 1))
    co, ci = int(w.shape[0]), int(w.shape[1])
    if ci * g != len(x) or co % g:
        raise Unsupported("Conv weight does not match its input channels")
    b = inp(node, 2)
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
        p.hook(node, DepthwiseGroups(node.input[0], 1))
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
def conv_transpose(p: Propagation, node: onnx.NodeProto) -> None:
    """ConvTranspose (weight [C_in, C_out/g, k...]): like Conv with the weight axes swapped."""
    x = tracked(p, node.input[0])
    w = p.const(inp(node, 1))
    if w is None:
        raise Unsupported("ConvTranspose weight computed at run time")
    g = int(attrs(node).get("group", 1))
    if int(w.shape[0]) != len(x) or len(x) % g:
        raise Unsupported("ConvTranspose weight does not match its input channels")
    cog = int(w.shape[1])
    b = inp(node, 2)
    if b and p.const(b) is None:
        raise Unsupported("ConvTranspose bias is not a constant")
    if g == 1:
        out = p.new(cog, node)
        p.member(node.input[1], node, 0, "consumer", x)
        p.member(node.input[1], node, 1, "producer", out)
    elif len(x) == g:  # depthwise
        out = [x[c] for c in range(g) for _ in range(cog)]
        p.member(node.input[1], node, 0, "norm", x)
        p.hook(node, DepthwiseGroups(node.input[0], 1))
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


def _bias_member(p: Propagation, node: onnx.NodeProto, name: str, out: list[int]) -> None:
    """Gemm's C: per-output-feature when its last axis has N entries; a scalar otherwise."""
    c = p.const(name)
    if c is None:
        raise Unsupported("Gemm C computed at run time")
    if c.ndim >= 1 and c.shape[-1] == len(out) and len(out) > 1:
        p.member(name, node, c.ndim - 1, "producer", out)
    elif c.size != 1 and (c.ndim == 0 or c.shape[-1] != 1):
        raise Unsupported("Gemm C shape")


@rule("Gemm")
def gemm(p: Propagation, node: onnx.NodeProto) -> None:
    """Gemm with a constant B: new output features; B's input axis consumes A's features."""
    a = attrs(node)
    if int(a.get("transA", 0)):
        raise Unsupported("Gemm with transA")
    x = tracked(p, node.input[0])
    w = p.const(node.input[1])
    if w is None or w.ndim != 2:
        raise Unsupported("Gemm B computed at run time")
    kax, nax = (1, 0) if int(a.get("transB", 0)) else (0, 1)
    if w.shape[kax] != len(x):
        raise Unsupported("Gemm B does not match A's features")
    out = p.new(int(w.shape[nax]), node)
    p.member(node.input[1], node, kax, "consumer", x)
    p.member(node.input[1], node, nax, "producer", out)
    if inp(node, 2):
        _bias_member(p, node, node.input[2], out)
    p.set(node.output[0], out)


@rule("MatMul", any_axis=True, layout_aware=True)
def matmul(p: Propagation, node: onnx.NodeProto) -> None:
    """MatMul by a constant 2-D B (a Linear): channels on A's last axis are consumed by B's rows and B's
    columns are new channels on the output's last axis; channels on another axis of A pass through. A
    MatMul of two activations is attention's (ops/attention.py)."""
    if p.ids(node.input[1]) is not None or (p.const(node.input[1]) is None and p.ids(node.input[0]) is not None
                                            and p.layout(node.input[0]) is not None):
        attention.matmul(p, node)
        return
    if p.layout(node.input[0]) is not None:
        raise Unsupported("a Linear over channels spread over several axes")
    x = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    w = p.const(node.input[1])
    r = rank(p, node.input[0])
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


@rule("BatchNormalization", "InstanceNormalization")
def norm(p: Propagation, node: onnx.NodeProto) -> None:
    """Per-channel norm: parameters are 'norm' members on axis 0, output copies the ids."""
    ids = tracked(p, node.input[0])
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


@rule("LpNormalization", any_axis=True)
def lpnorm(p: Propagation, node: onnx.NodeProto) -> None:
    """Lp normalisation over a non-channel axis passes channels through."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    axis = int(attrs(node).get("axis", -1))
    if r is None or axis % r in (0, t):
        raise Unsupported("LpNormalization over the channel axis")
    p.set(node.output[0], ids, t)
