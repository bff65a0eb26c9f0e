"""The NetworkX view of a model: one node per operation (named as in ONNX), one edge per tensor hand-over.

This is the one graph the encoder reads (agmc_onnx.encoder.features turns it into PyG `Data`). Node
attributes are what a layer looks like from outside, from the model's static shapes at batch 1:

==========  ===================================================================================
op          ONNX op type
index       position in topological order
macs        MACs of the node (agmc_onnx.cost.node_macs_static, design.md's convention)
c_in/c_out  channels in and out (K and N for Gemm/MatMul); unknown dims count as 1
spatial     product of the output's spatial dims (1 without any)
kernel      kernel size (attribute, else a Conv weight's trailing dims, else [1, 1])
stride      the largest stride
groups      Conv/ConvTranspose `group`
params      elements of the initializers the node reads
weight      elements of its second input (a layer's weight), 0 without one
merge       True for Add/Mul/Sum/Concat of two or more activations: a block boundary
==========  ===================================================================================

Edges carry `tensor` (the tensor's name) and `order` (the position of the hand-over in the list of
every node's inputs in topological order), so a PyG conversion can keep a stable edge order.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import onnx

from agmc_onnx.cost import node_macs_static
from agmc_onnx.model import ModelGraph, topological_order
from agmc_onnx.protos import attr

MERGE_OPS = ("Add", "Mul", "Sum", "Concat")
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


class _Dims:
    """Static dims at batch 1 with every unknown or symbolic dim as 1 (what the encoder's features read)."""

    def __init__(self, model: ModelGraph) -> None:
        self.model = model

    def get(self, name: str, default: Any = None) -> list[int] | Any:
        """Dims of a tensor, `default` when its rank is unknown."""
        got = self.model.static_shape(name)
        if got is None:
            return default
        return [d if isinstance(d, int) and d >= 0 else 1 for d in got]


def _channels(node: onnx.NodeProto, dims: _Dims) -> tuple[int, int, int]:
    """(C_in, C_out, spatial out) of a node; K and N for Gemm/MatMul."""
    a = dims.get(node.input[0], []) if node.input and node.input[0] else []
    out = dims.get(node.output[0], []) if node.output else []
    cin = a[1] if len(a) > 1 else 0
    cout = out[1] if len(out) > 1 else (out[-1] if out else 0)
    spatial = math.prod(out[2:]) if len(out) > 2 else 1
    if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
        b = dims.get(node.input[1], [])
        if a and b:
            trans_a = attr(node, "transA", 0) if node.op_type == "Gemm" else 0
            trans_b = attr(node, "transB", 0) if node.op_type == "Gemm" else 0
            cin = a[-2] if trans_a else a[-1]
            cout = b[-2] if trans_b else b[-1]
    return int(cin), int(cout), int(spatial)


def node_attributes(model: ModelGraph, node: onnx.NodeProto, index: int, dims: _Dims) -> dict[str, Any]:
    """The view's attributes of one node (module docstring)."""
    cin, cout, spatial = _channels(node, dims)
    kernel = attr(node, "kernel_shape", None)
    if not kernel:
        w = dims.get(node.input[1], [0, 0, 1, 1]) if node.op_type == "Conv" and len(node.input) > 1 else [1, 1]
        kernel = w[2:] if node.op_type == "Conv" and len(node.input) > 1 else w
    kernel = list(kernel) + [1] * (2 - len(kernel))
    activations = [t for t in node.input if t and t not in model.inits]
    weight = math.prod(dims.get(node.input[1], [0])) if len(node.input) > 1 and node.input[1] else 0
    return {
        "op": node.op_type,
        "index": index,
        "macs": int(node_macs_static(node, model.inits, dims)) if node.op_type in MAC_OPS else 0,
        "c_in": cin,
        "c_out": cout,
        "spatial": spatial,
        "kernel": [int(k) for k in kernel],
        "stride": int(max(attr(node, "strides", [1]) or [1])),
        "groups": int(attr(node, "group", 1)),
        "params": int(sum(model.inits[t].size for t in node.input if t in model.inits)),
        "weight": int(weight),
        "merge": node.op_type in MERGE_OPS and len(activations) >= 2,
    }


def graph_view(model: ModelGraph) -> nx.MultiDiGraph:
    """Nodes = ops in topological order with `node_attributes`; edges = tensors (one per hand-over)."""
    g = nx.MultiDiGraph()
    dims = _Dims(model)
    nodes = topological_order(model.graph)
    for i, node in enumerate(nodes):
        g.add_node(node.name, **node_attributes(model, node, i, dims))
    producer: dict[str, str] = {}
    order = 0
    for node in nodes:
        for t in node.input:
            if t in producer:
                g.add_edge(producer[t], node.name, tensor=t, order=order)
                order += 1
        for t in node.output:
            producer[t] = node.name
    return g
