"""One-layer models of a network's prunable layers, buildable at any kept width (what the tables time).

For every prunable layer (Conv / Gemm with a weight initializer, plus the BatchNormalization and
activation that follow it alone, which ORT fuses into it) `layer_specs` gives a builder of a
single-layer model (onnx.helper) at each (kept input, kept output) width, and the grid of widths the
rounding allows. Identical configurations (op, shapes, attributes, followers) share a signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.cost import Length
    from agmc_onnx.plan import RoundTo

FUSED_AFTER = ("BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh")


@dataclass
class LayerSpec:
    """How to build a one-layer model of a node at any kept width."""

    node: str
    op: str  # Conv | Gemm
    config: str  # signature of (op, shapes, attributes, fused followers): equal configs share tables
    in_len: Length
    out_len: Length
    grid_in: list[int]
    grid_out: list[int]
    build: Callable[[int, int, int], onnx.ModelProto] = field(repr=False)  # (cin, cout, batch) -> model


def _grid(length: Length, sizes: Mapping[int, int], round_to: RoundTo, max_points: int) -> list[int]:
    """Widths of one axis to measure: from its minimum to its full length in its groups' finest step, subsampled."""
    from agmc_onnx.plan import group_step, round_count

    full = length.full()
    if not length.terms:
        return [full]
    low = int(round(length.of_counts({g: round_count(0, sizes[g], round_to) for g, _, _ in length.terms})))
    step = max(1, int(round(min(group_step(sizes[g], round_to) * c for g, c, _ in length.terms))))
    values = sorted({*range(low, full, step), full})
    if len(values) > max_points:
        idx = np.unique(np.round(np.linspace(0, len(values) - 1, max_points)).astype(int))
        values = [values[i] for i in idx]
    return [int(v) for v in values if v > 0] or [full]


def _followers(analysis: Analysis, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The BatchNormalization / activation chain right after a node (each the sole consumer)."""
    m = analysis.model
    out, chain, cur = set(m.output_names), [], node
    while len(chain) < 2:
        cons = m.consumers.get(cur.output[0], [])
        if cur.output[0] in out or len(cons) != 1 or cons[0].op_type not in FUSED_AFTER:
            break
        nxt = cons[0]
        if nxt.op_type == "BatchNormalization" and (chain or len(nxt.output) > 1 and any(nxt.output[1:])):
            break
        chain.append(nxt)
        cur = nxt
    return chain


def _attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A node's attributes as python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def layer_specs(analysis: Analysis, round_to: RoundTo, max_points: int = 6) -> tuple[list[LayerSpec], list[str]]:
    """One LayerSpec per Conv/Gemm the tables model; and the MAC nodes left to the constant (with why)."""
    m = analysis.model
    sizes = {g.id: g.size for g in analysis.groups}
    by_name = {n.name: n for n in m.nodes}
    specs: list[LayerSpec] = []
    skipped: list[str] = []
    for term in analysis.cost.terms:
        node = by_name.get(term.node)
        if node is None or node.op_type not in ("Conv", "Gemm") or len(term.lengths) != 2:
            skipped.append(term.node)
            continue
        w = m.inits[node.input[1]]
        x_shape = m.static_shape(node.input[0])
        if x_shape is None or any(not isinstance(d, (int, np.integer)) for d in x_shape[1:]):
            skipped.append(term.node)
            continue
        followers = _followers(analysis, node)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if node.op_type == "Conv":
            out_len, in_len = term.lengths[0], term.lengths[1]
            group = int(_attrs(node).get("group", 1))
            depthwise = group > 1 and w.shape[1] == 1
            mult = w.shape[0] // group if depthwise else 1
            spatial = [int(d) for d in x_shape[2:]]
            attrs = _attrs(node, ("group",))
            build = _conv_builder(node, spatial, list(w.shape[2:]), attrs, group, depthwise, mult, has_bias,
                                  followers, m.inits)  # fmt: skip
            sig = ("Conv", spatial, list(w.shape), attrs, group, has_bias)
        else:
            a = _attrs(node)
            if a.get("transA", 0):
                skipped.append(term.node)
                continue
            trans_b = int(a.get("transB", 0))
            out_len, in_len = (term.lengths[0], term.lengths[1]) if trans_b else (term.lengths[1], term.lengths[0])
            build = _gemm_builder(a, trans_b, has_bias, followers, m.inits)
            sig = ("Gemm", list(w.shape), a, has_bias)
        fsig = [(f.op_type, sorted(_attrs(f).items())) for f in followers]
        grid_in = _grid(in_len, sizes, round_to, max_points)
        grid_out = _grid(out_len, sizes, round_to, max_points)
        config = hashlib.sha1(repr((sig, fsig, grid_in, grid_out)).encode()).hexdigest()[:16]
        specs.append(LayerSpec(node.name, node.op_type, config, in_len, out_len, grid_in, grid_out, build))
    return specs, skipped


def _rand(shape: list[int], rng: np.random.Generator, name: str) -> TensorProto:
    """A random float initializer."""
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)


def _follow_nodes(followers: list[onnx.NodeProto], x: str, width: int, inits: Mapping[str, np.ndarray],
                  rng: np.random.Generator) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:  # fmt: skip
    """Copies of the fused followers at `width` channels; returns nodes, initializers, last output."""
    nodes, tensors = [], []
    for i, f in enumerate(followers):
        out = f"y{i}"
        if f.op_type == "BatchNormalization":
            names = [f"bn{i}_{k}" for k in ("s", "b", "m", "v")]
            tensors += [_rand([width], rng, names[0]), _rand([width], rng, names[1]), _rand([width], rng, names[2]),
                        numpy_helper.from_array(np.ones(width, np.float32), names[3])]  # fmt: skip
            nodes.append(helper.make_node("BatchNormalization", [x, *names], [out], **_attrs(f, ("training_mode",))))
        else:
            extra = []
            for j, name in enumerate(f.input[1:]):
                if name and name in inits:
                    cname = f"act{i}_{j}"
                    tensors.append(numpy_helper.from_array(np.asarray(inits[name]), cname))
                    extra.append(cname)
                else:
                    extra.append("")
            nodes.append(helper.make_node(f.op_type, [x, *extra], [out], **_attrs(f)))
        x = out
    return nodes, tensors, x


def _model(nodes: list[onnx.NodeProto], tensors: list[TensorProto], x_shape: list[int], out: str) -> onnx.ModelProto:
    """A one-layer model with input `x` and output `out`."""
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], tensors,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _layer_model(op: str, w_shape: list[int], attrs: dict[str, Any], has_bias: bool, cout: int,
                 followers: list[onnx.NodeProto], inits: Mapping[str, np.ndarray], x_shape: list[int],
                 ) -> onnx.ModelProto:  # fmt: skip
    """One `op` node (random weight of `w_shape`, bias of `cout` if the layer has one) and copies of its followers."""
    rng = np.random.default_rng(0)
    tensors = [_rand(w_shape, rng, "w")]
    ins = ["x", "w"]
    if has_bias:
        tensors.append(_rand([cout], rng, "b"))
        ins.append("b")
    nodes = [helper.make_node(op, ins, ["c"], **attrs)]
    more, more_t, out = _follow_nodes(followers, "c", cout, inits, rng)
    return _model(nodes + more, tensors + more_t, x_shape, out)


def _conv_builder(node: onnx.NodeProto, spatial: list[int], kernel: list[int], attrs: dict[str, Any], group: int,
                  depthwise: bool, mult: int, has_bias: bool, followers: list[onnx.NodeProto],
                  inits: Mapping[str, np.ndarray]) -> Callable[[int, int, int], onnx.ModelProto]:  # fmt: skip
    """Builder of a Conv (+ followers) at kept (input channels per conv group, output channels)."""

    def build(cin: int, cout: int, batch: int) -> onnx.ModelProto:
        g = max(1, cout // mult) if depthwise else group
        cout = g * mult if depthwise else max(g, cout - cout % g)
        return _layer_model("Conv", [cout, cin, *kernel], {"group": g, **attrs}, has_bias, cout, followers, inits,
                            [batch, cin * g, *spatial])  # fmt: skip

    return build


def _gemm_builder(attrs: dict[str, Any], trans_b: int, has_bias: bool, followers: list[onnx.NodeProto],
                  inits: Mapping[str, np.ndarray]) -> Callable[[int, int, int], onnx.ModelProto]:  # fmt: skip
    """Builder of a Gemm (+ followers) at kept (input features, output features)."""

    def build(cin: int, cout: int, batch: int) -> onnx.ModelProto:
        return _layer_model("Gemm", [cout, cin] if trans_b else [cin, cout], attrs, has_bias, cout, followers, inits,
                            [batch, cin])  # fmt: skip

    return build


def null_model() -> onnx.ModelProto:
    """The emptiest model ORT runs (Identity over one float): the per-run overhead to subtract."""
    return _model([helper.make_node("Identity", ["x"], ["y"])], [], [1], "y")
