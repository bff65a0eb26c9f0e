"""ONNX graph -> PyTorch Geometric `Data`: one node per operation, one edge per tensor hand-over.

Node features (all scaled to about [0, 1], so one policy can read models of any size):

=====================  =====================================================================
one-hot op type        `OP_TYPES` (+ one "other" slot)
channels in / out      log2(c + 1) / 12
kernel                 kH / 7, kW / 7
stride                 max stride / 4
groups                 log2(groups + 1) / 12, and a depthwise flag (groups == C_in > 1)
spatial size           log2(H_out * W_out + 1) / 16
MACs / params shares   of the whole model, and their log scale
position               topological index / number of nodes
prunable mark          1 when the node produces a prunable channel group
merge mark             1 for residual Add / Mul of two activations and Concat (block boundaries)
=====================  =====================================================================

`block` gives each node the index of its block: the topological order is cut after every merge
point, so a ResNet basic block, a MobileNet inverted residual or a DenseNet layer is one block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper, shape_inference
from torch_geometric.data import Data

from agmc_onnx.model import topological_order

OP_TYPES: tuple[str, ...] = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "PRelu", "LeakyRelu", "Mul", "Add",
    "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Split", "Slice",
)  # fmt: skip
MERGE_OPS = ("Add", "Mul", "Sum", "Concat")
NUM_NODE_FEATURES = len(OP_TYPES) + 1 + 17


@dataclass
class GraphInfo:
    """What the encoder needs beyond the tensor `Data`: node names and group -> node indices."""

    names: list[str]
    group_ids: list[int]  # prunable group ids, in step (topological) order
    group_nodes: list[list[int]]  # node indices of each prunable group's producers
    num_blocks: int


def model_proto(model: Any) -> onnx.ModelProto:
    """The ModelProto inside an engine ModelGraph, a path or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, Path)):
        return onnx.load(str(model))
    for attr in ("proto", "model_proto", "onnx_model"):
        value = getattr(model, attr, None)
        if isinstance(value, onnx.ModelProto):
            return value
    for meth in ("to_onnx", "to_proto", "export"):
        fn = getattr(model, meth, None)
        if callable(fn):
            value = fn()
            if isinstance(value, onnx.ModelProto):
                return value
    raise TypeError(f"cannot get an onnx.ModelProto out of {type(model).__name__}")


def _shapes(proto: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every tensor that shape inference knows (batch taken as 1)."""
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read still gets op features
        inferred = proto
    out: dict[str, list[int]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in g.initializer:
        out[init.name] = list(init.dims)
    return out


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """One attribute's value, or `default`."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> tuple[int, int, int, int]:
    """(MACs, C_in, C_out, spatial out) of one node from static shapes (design.md's convention)."""
    ins = [shapes.get(t, []) for t in node.input]
    out = shapes.get(node.output[0], []) if node.output else []
    cin = ins[0][1] if ins and len(ins[0]) > 1 else 0
    cout = out[1] if len(out) > 1 else (out[-1] if out else 0)
    spatial = int(np.prod(out[2:])) if len(out) > 2 else 1
    macs = 0
    if node.op_type in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1]:
        w = ins[1]
        if node.op_type == "Conv":
            macs = spatial * int(np.prod(w))  # C_out * C_in/g * kH * kW per output position
        else:
            in_spatial = int(np.prod(ins[0][2:])) if len(ins[0]) > 2 else 1
            macs = in_spatial * int(np.prod(w))
    elif node.op_type in ("Gemm", "MatMul") and len(ins) > 1 and ins[0] and ins[1]:
        a, b = ins[0], ins[1]
        trans_a = _attr(node, "transA", 0) if node.op_type == "Gemm" else 0
        trans_b = _attr(node, "transB", 0) if node.op_type == "Gemm" else 0
        m = int(np.prod(a[:-2])) * (a[-1] if trans_a else a[-2]) if len(a) >= 2 else 1
        k = a[-2] if trans_a else a[-1]
        n = b[-2] if trans_b else b[-1]
        macs = m * k * n
        cin, cout = k, n
    return macs, cin, cout, spatial


def _params(node: onnx.NodeProto, inits: dict[str, int]) -> int:
    """Elements of the initializers a node reads."""
    return sum(inits.get(t, 0) for t in node.input)


def graph_data(model: Any, groups: Sequence[Any]) -> tuple[Data, GraphInfo]:
    """Encode `model` (ModelProto or engine ModelGraph) and its channel groups as a PyG graph."""
    proto = model_proto(model)
    shapes = _shapes(proto)
    init_sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    inits = {i.name for i in proto.graph.initializer}
    nodes = topological_order(proto.graph)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    index = {name: i for i, name in enumerate(names)}
    prunable = [g for g in groups if getattr(g, "prunable", g.frozen_reason is None)]
    producer_of: dict[str, int] = {}
    group_nodes: list[list[int]] = []
    for g in prunable:
        idx = [index[p] for p in g.producers if p in index]
        group_nodes.append(idx)
        for i in idx:
            producer_of[names[i]] = g.id
    stats = [_macs(n, shapes) for n in nodes]
    params = [_params(n, init_sizes) for n in nodes]
    total_macs = max(1, sum(s[0] for s in stats))
    total_params = max(1, sum(params))
    feats = np.zeros((len(nodes), NUM_NODE_FEATURES), dtype=np.float32)
    block = np.zeros(len(nodes), dtype=np.int64)
    current = 0
    producer_node: dict[str, int] = {}
    src: list[int] = []
    dst: list[int] = []
    for i, n in enumerate(nodes):
        macs, cin, cout, spatial = stats[i]
        kernel = _attr(n, "kernel_shape", None) or (shapes.get(n.input[1], [0, 0, 1, 1])[2:] if n.op_type == "Conv" and len(n.input) > 1 else [1, 1])
        kernel = list(kernel) + [1] * (2 - len(kernel))
        strides = _attr(n, "strides", [1])
        groups_attr = int(_attr(n, "group", 1))
        act_inputs = [t for t in n.input if t and t not in inits]
        merge = n.op_type in MERGE_OPS and len(act_inputs) >= 2
        t = OP_TYPES.index(n.op_type) if n.op_type in OP_TYPES else len(OP_TYPES)
        f = feats[i]
        f[t] = 1.0
        j = len(OP_TYPES) + 1
        f[j : j + 17] = [
            math.log2(cin + 1) / 12, math.log2(cout + 1) / 12, kernel[0] / 7, kernel[1] / 7,
            max(strides) / 4, math.log2(groups_attr + 1) / 12,
            float(groups_attr > 1 and groups_attr == cin), math.log2(spatial + 1) / 16,
            macs / total_macs, math.log1p(macs) / math.log1p(total_macs),
            params[i] / total_params, math.log1p(params[i]) / math.log1p(total_params),
            i / max(1, len(nodes) - 1), float(names[i] in producer_of), float(merge),
            float(n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and macs > 0), 1.0,
        ]  # fmt: skip
        block[i] = current
        if merge:
            current += 1
        for tname in n.input:
            if tname in producer_node:
                src.append(producer_node[tname])
                dst.append(i)
        for tname in n.output:
            producer_node[tname] = i
    edge_index = torch.tensor([src, dst], dtype=torch.long) if src else torch.zeros(2, 0, dtype=torch.long)
    num_blocks = int(block.max()) + 1 if len(nodes) else 1
    data = Data(x=torch.from_numpy(feats), edge_index=edge_index, block=torch.from_numpy(block), num_nodes=len(nodes))
    info = GraphInfo(names, [g.id for g in prunable], group_nodes, num_blocks)
    return data, info


def numpy_initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer as a numpy array."""
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
