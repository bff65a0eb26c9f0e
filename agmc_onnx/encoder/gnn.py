"""The staged graph encoder (AGMC): operations -> blocks -> whole graph, plus one embedding per group."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from agmc_onnx.encoder.features import NUM_NODE_FEATURES, GraphInfo
from agmc_onnx.encoder.layers import AttentionReadout, FlowConv, SegmentPool


class GraphEncoder(nn.Module):
    """Encodes a computational graph in three stages, as AGMC does.

    1. operation level: `op_layers` rounds of `FlowConv` over the op graph;
    2. block level: op embeddings pooled per block (subgraphs between merge points, `Data.block`),
       then `block_layers` rounds of `FlowConv` over the block graph (an edge wherever data crosses);
    3. graph level: attention readout over the blocks -> the graph embedding.

    A prunable group's embedding combines its producers' op embeddings with their block's
    embedding. Sizes do not depend on the model, so a trained encoder reads any other model.
    """

    def __init__(self, hidden: int = 64, embed: int = 32, op_layers: int = 3, block_layers: int = 2) -> None:
        super().__init__()
        self.embed = embed
        self.inp = nn.Sequential(nn.Linear(NUM_NODE_FEATURES, hidden), nn.ReLU())
        self.op_convs = nn.ModuleList(FlowConv(hidden) for _ in range(op_layers))
        self.block_pool = SegmentPool(hidden, hidden)
        self.block_convs = nn.ModuleList(FlowConv(hidden) for _ in range(block_layers))
        self.readout = AttentionReadout(hidden, embed)
        self.group_head = nn.Sequential(nn.Linear(2 * hidden, embed), nn.Tanh())

    def forward(self, data: Data, info: GraphInfo, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(graph embedding [embed], group embeddings [groups, embed]); `x` replaces the node features, and
        with leading batch dims ([B, nodes, F]: copies of the graph) every output gains them too."""
        x = self.inp(data.x if x is None else x)
        for conv in self.op_convs:
            x = conv(x, data.edge_index)
        block = data.block
        h = self.block_pool(x, block, info.num_blocks)
        block_edges = _block_edges(data, info.num_blocks)
        for conv in self.block_convs:
            h = conv(h, block_edges)
        graph = self.readout(h)
        group_rows = []
        for nodes in info.group_nodes:
            idx = torch.tensor(nodes, dtype=torch.long, device=x.device)
            op = x.index_select(-2, idx).mean(-2)
            group_rows.append(torch.cat([op, h[..., int(block[idx[0]]), :]], dim=-1))
        if not group_rows:
            return graph, x.new_zeros(*x.shape[:-2], 0, self.embed)
        return graph, self.group_head(torch.stack(group_rows, dim=-2))


def _block_edges(data: Data, num_blocks: int) -> Tensor:
    """Edges between blocks wherever an op edge crosses a block boundary (deduplicated, cached)."""
    cached = getattr(data, "block_edge_index", None)
    if cached is not None:
        return cached
    src, dst = data.block[data.edge_index[0]], data.block[data.edge_index[1]]
    keep = src != dst
    pairs = torch.unique(torch.stack([src[keep], dst[keep]]), dim=1) if keep.any() else torch.zeros(2, 0, dtype=torch.long)
    data.block_edge_index = pairs
    return pairs
