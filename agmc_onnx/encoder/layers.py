"""The GNN layers of the staged encoder, each one small, in the style of PyG's nn/conv modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax


class FlowConv(nn.Module):
    r"""Message passing along and against the data flow of a computational graph.

    .. math::
        \mathbf{x}'_i = \mathbf{x}_i + \sigma\Big(\mathbf{W}_0 \mathbf{x}_i
        + \mathbf{W}_1 \operatorname{mean}_{j \to i} \mathbf{x}_j
        + \mathbf{W}_2 \operatorname{mean}_{i \to k} \mathbf{x}_k\Big)

    followed by a LayerNorm. Inputs (producers, :math:`j \to i`) and outputs (consumers,
    :math:`i \to k`) get separate weights: what feeds a layer and what it feeds matter differently.
    The means are PyG's ``scatter``; not a ``MessagePassing`` subclass, whose generated ``propagate``
    leaves a temporary file behind in every process that builds the layer.

    Args:
        channels (int): size of the node embeddings (input = output).

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)`, edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** node features :math:`(|\mathcal{V}|, F)`
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lin_self = nn.Linear(channels, channels)
        self.lin_in = nn.Linear(channels, channels, bias=False)
        self.lin_out = nn.Linear(channels, channels, bias=False)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """One round of two-way messages with a residual connection; `x` may carry leading batch dims
        ([..., nodes, F]: copies of one graph with other features, as per-step re-encoding feeds it)."""
        src, dst = edge_index
        n = x.size(-2)
        from_inputs = scatter(x.index_select(-2, src), dst, dim=-2, dim_size=n, reduce="mean")
        from_outputs = scatter(x.index_select(-2, dst), src, dim=-2, dim_size=n, reduce="mean")
        h = self.lin_self(x) + self.lin_in(from_inputs) + self.lin_out(from_outputs)
        return self.norm(x + torch.relu(h))


class SegmentPool(nn.Module):
    r"""Pools node embeddings into segment embeddings (mean and max, then a linear map).

    .. math::
        \mathbf{h}_b = \sigma\Big(\mathbf{W}\,\big[\operatorname{mean}_{i \in b} \mathbf{x}_i \,\|\,
        \max_{i \in b} \mathbf{x}_i\big]\Big)

    Args:
        in_channels (int): node embedding size.
        out_channels (int): segment embedding size.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)`, segment index :math:`(|\mathcal{V}|)`
        - **output:** segment features :math:`(B, F_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * in_channels, out_channels)

    def forward(self, x: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        """Mean || max per segment, projected."""
        mean = scatter(x, segment, dim=-2, dim_size=num_segments, reduce="mean")
        top = scatter(x, segment, dim=-2, dim_size=num_segments, reduce="max")
        return torch.relu(self.lin(torch.cat([mean, top], dim=-1)))


class AttentionReadout(nn.Module):
    r"""Gated attention readout: one embedding for the whole graph.

    .. math::
        \mathbf{g} = \sum_b \operatorname{softmax}_b(\mathbf{w}^\top \mathbf{h}_b)\, \mathbf{W}\mathbf{h}_b

    Args:
        in_channels (int): segment embedding size.
        out_channels (int): graph embedding size.

    Shapes:
        - **input:** segment features :math:`(B, F)`
        - **output:** graph features :math:`(F_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = nn.Linear(in_channels, 1)
        self.lin = nn.Linear(in_channels, out_channels)

    def forward(self, h: Tensor) -> Tensor:
        """Attention-weighted sum of the projected segments ([..., segments, F] -> [..., F_out])."""
        if h.dim() == 2:
            index = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
            alpha = softmax(self.gate(h).squeeze(-1), index)
        else:  # copies of one graph: a softmax per copy, as PyG's (max subtracted, 1e-16 in the sum)
            g = self.gate(h).squeeze(-1)
            e = (g - g.max(-1, keepdim=True).values).exp()
            alpha = e / (e.sum(-1, keepdim=True) + 1e-16)
        return torch.tanh((alpha.unsqueeze(-1) * self.lin(h)).sum(-2))
