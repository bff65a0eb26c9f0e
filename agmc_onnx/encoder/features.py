"""NetworkX view of a model (agmc_onnx.encoder.graph) -> PyTorch Geometric `Data` with scaled node features.

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
heads                  log2(heads + 1) / 8 for a producer of attention heads (a group whose channel
                       is a head), else 0
head dim               log2(positions per head + 1) / 8 for such a producer, else 0
statistic mark         1 for a producer of a group that LayerNorms normalise (the residual stream)
activation product     1 for a MatMul / Einsum of two activations (attention's q k^T and x v)
=====================  =====================================================================

`block` gives each node the index of its block: the topological order is cut after every merge
point, so a ResNet basic block, a MobileNet inverted residual or a DenseNet layer is one block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import from_networkx

from agmc_onnx.encoder.graph import graph_view
from agmc_onnx.model import ModelGraph

OP_TYPES: tuple[str, ...] = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "PRelu", "LeakyRelu", "Mul", "Add",
    "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Split", "Slice",
    "Einsum", "LayerNormalization", "Softmax", "Transpose",
)  # fmt: skip
NUM_NODE_FEATURES = len(OP_TYPES) + 1 + 21
NUMERIC = len(OP_TYPES) + 1  # where the numeric columns of `node_features` start
# numeric columns that depend on widths (rl.states.StepGraphStates recomputes them for a partly pruned graph)
C_IN, C_OUT, MACS_SHARE, MACS_LOG, PARAMS_SHARE, PARAMS_LOG = 0, 1, 8, 9, 10, 11


@dataclass
class GraphInfo:
    """What the encoder needs beyond the tensor `Data`: node names and group -> node indices."""

    names: list[str]
    group_ids: list[int]  # prunable group ids, in step (topological) order
    group_nodes: list[list[int]]  # node indices of each prunable group's producers
    num_blocks: int


def node_features(d: dict[str, Any], n: int, total_macs: int, total_params: int, produces_group: bool,
                  channels: Any = None) -> list[float]:
    """The scaled feature row of one node of the view (module docstring), `n` nodes in the model; `channels`
    is the prunable channel group the node produces, if any."""
    row = [0.0] * NUM_NODE_FEATURES
    row[OP_TYPES.index(d["op"]) if d["op"] in OP_TYPES else len(OP_TYPES)] = 1.0
    macs, params, cin, kernel, group = d["macs"], d["params"], d["c_in"], d["kernel"], d["groups"]
    j = NUMERIC
    row[j : j + 17] = [
        math.log2(cin + 1) / 12, math.log2(d["c_out"] + 1) / 12, kernel[0] / 7, kernel[1] / 7,
        d["stride"] / 4, math.log2(group + 1) / 12, float(group > 1 and group == cin),
        math.log2(d["spatial"] + 1) / 16, macs / total_macs, math.log1p(macs) / math.log1p(total_macs),
        params / total_params, math.log1p(params) / math.log1p(total_params),
        d["index"] / max(1, n - 1), float(produces_group), float(d["merge"]),
        float(d["op"] in ("Conv", "ConvTranspose", "Gemm", "MatMul") and macs > 0), 1.0,
    ]  # fmt: skip
    width = int(getattr(channels, "class_width", 1)) if channels is not None else 1
    heads = int(channels.size) if channels is not None and width > 1 else 0
    row[j + 17 : j + 21] = [
        math.log2(heads + 1) / 8, math.log2(width + 1) / 8 if heads else 0.0,
        float(bool(getattr(channels, "stats", ()))) if channels is not None else 0.0,
        float(d["op"] in ("MatMul", "Einsum") and d["params"] == 0 and macs > 0),
    ]
    return row


def graph_data(model: ModelGraph, groups: Sequence[Any]) -> tuple[Data, GraphInfo]:
    """Encode a model's NetworkX view and its prunable channel groups as a PyG graph."""
    view = graph_view(model)
    names = list(view.nodes)
    index = {name: i for i, name in enumerate(names)}
    prunable = [g for g in groups if getattr(g, "prunable", g.frozen_reason is None)]
    producer_of: dict[str, int] = {}
    group_nodes: list[list[int]] = []
    for g in prunable:
        idx = [index[p] for p in g.producers if p in index]
        group_nodes.append(idx)
        for i in idx:
            producer_of[names[i]] = g.id
    attrs = [view.nodes[name] for name in names]
    by_id = {g.id: g for g in prunable}
    total_macs = max(1, sum(d["macs"] for d in attrs))
    total_params = max(1, sum(d["params"] for d in attrs))
    # blocks: the topological order cut after every merge point (a ResNet block, an inverted residual)
    block = np.cumsum([0] + [int(d["merge"]) for d in attrs[:-1]]) if attrs else np.zeros(0, dtype=np.int64)
    features = nx.MultiDiGraph()
    for i, name in enumerate(names):
        group = by_id.get(producer_of[name]) if name in producer_of else None
        features.add_node(name, x=node_features(attrs[i], len(names), total_macs, total_params, name in producer_of,
                                                group), block=int(block[i]))  # fmt: skip
    for u, v, d in view.edges(data=True):
        features.add_edge(u, v, order=d["order"])
    data = from_networkx(features, group_node_attrs=["x"], group_edge_attrs=["order"]) if names else Data(
        x=torch.zeros(0, NUM_NODE_FEATURES), edge_index=torch.zeros(2, 0, dtype=torch.long), block=torch.zeros(0, dtype=torch.long))  # fmt: skip
    if data.edge_index.numel():
        data.edge_index = data.edge_index[:, torch.argsort(data.edge_attr.view(-1))]  # inputs in topological order
    else:
        data.edge_index = torch.zeros(2, 0, dtype=torch.long)
    data.edge_attr = None
    data.x = data.x.float()
    data.block = data.block.long()
    data.num_nodes = len(names)
    num_blocks = int(block.max()) + 1 if len(names) else 1
    return data, GraphInfo(names, [g.id for g in prunable], group_nodes, num_blocks)
