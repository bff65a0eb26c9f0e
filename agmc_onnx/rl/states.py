"""Where the static part of each step's state comes from: the GNN (agmc) or AMC's hand-made features."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from agmc_onnx.encoder import GraphEncoder, graph_data, graph_view
from agmc_onnx.encoder import features as cols
from agmc_onnx.protos import attr
from agmc_onnx.rl.env import _prunable


class GraphStates(nn.Module):
    """AGMC: the state of step t = [graph embedding, embedding of group t] from a trainable GNN.

    `standardize` (default): the group embeddings are standardised over the model's groups, column by
    column (not learned, gradients pass): the GNN's raw group rows differ by a std of ~0.1 around a
    shared offset, and the early actor read them as nearly one state. With the critic warm-up, ResNet-20,
    seeds 0/1: best 0.857/0.838 -> 0.857/0.850, post-warm-up 10-episode mean never below 0.48/0.50.
    """

    kind = "agmc"
    decoder = "groups"

    def __init__(self, analysis: Any, encoder: GraphEncoder | None = None, standardize: bool = True) -> None:
        super().__init__()
        self.encoder = encoder or GraphEncoder()
        self.data, self.info = graph_data(analysis.model, _prunable(analysis))
        self.dim = 2 * self.encoder.embed
        self.standardize = standardize

    def forward(self) -> Tensor:
        """[steps, dim]: one static state row per prunable group."""
        graph, groups = self.encoder(self.data, self.info)
        if self.standardize:
            groups = standardize_rows(groups)
        return torch.cat([graph.expand(groups.size(0), -1), groups], dim=1)


def standardize_rows(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Each column to zero mean and unit std over the rows (the model's groups; [..., rows, F]); not learned,
    differentiable."""
    if x.size(-2) < 2:
        return x - x.mean(-2, keepdim=True)
    return (x - x.mean(-2, keepdim=True)) / (x.std(-2, unbiased=False, keepdim=True) + eps)


class LSTMGraphStates(GraphStates):
    """AGMC's decoder as in the paper: an LSTM unrolls the graph embedding into one state per group.

    Row t = [graph embedding, h_t], h_t the LSTM's output at step t with the graph embedding as
    every step's input (groups in topological order); the per-group GNN embeddings are not used.
    """

    decoder = "lstm"

    def __init__(self, analysis: Any, encoder: GraphEncoder | None = None, standardize: bool = True) -> None:
        super().__init__(analysis, encoder, standardize)
        self.lstm = nn.LSTM(self.encoder.embed, self.encoder.embed)

    def forward(self) -> Tensor:
        """[steps, dim]: the graph embedding beside the LSTM's unrolled states."""
        graph, groups = self.encoder(self.data, self.info)
        seq = graph.expand(groups.size(0), -1)
        h, _ = self.lstm(seq.unsqueeze(1))
        return torch.cat([seq, torch.tanh(h.squeeze(1))], dim=1)


class StepGraphStates(GraphStates):
    """Per-step re-encoding (GNN-RL's state): step t's row is read from the graph as pruned so far.

    The node features that depend on widths (channels in / out, MACs and params shares and their logs) are
    recomputed from the keep ratios applied at steps < t (a node whose weights produce or normalise a group's
    channels scales by its ratio, one whose weights consume them too, a depthwise conv once; weightless nodes
    keep their widths), and the GNN encodes
    that graph: the state sees what has been cut. `rows` encodes a batch of (step, ratios so far) pairs as
    copies of the graph in one forward; `forward` (nothing cut) is the one-shot table of GraphStates.
    """

    decoder = "stepwise"
    stepwise = True

    def __init__(self, analysis: Any, encoder: GraphEncoder | None = None, standardize: bool = True) -> None:
        super().__init__(analysis, encoder, standardize)
        groups = _prunable(analysis)
        view = graph_view(analysis.model)
        names = self.info.names
        steps = len(groups)
        out_step, in_step = {}, {}
        for k, g in enumerate(groups):
            for m in g.members:
                (in_step if m.role == "consumer" else out_step).setdefault(m.node, k)
            for p in g.producers:
                out_step.setdefault(p, k)
        attrs = [view.nodes[n] for n in names]
        self.register_buffer("raw", torch.tensor([[d["c_in"], d["c_out"], d["macs"], d["params"]] for d in attrs],
                                                 dtype=torch.float64).reshape(len(names), 4))  # fmt: skip
        out_idx = [out_step.get(n, steps) for n in names]
        in_idx = [in_step.get(n, steps) if in_step.get(n, steps) != out_step.get(n, -1) else steps for n in names]
        self.register_buffer("out_idx", torch.tensor(out_idx, dtype=torch.long))
        self.register_buffer("in_idx", torch.tensor(in_idx, dtype=torch.long))
        self.total_macs = float(max(1, sum(d["macs"] for d in attrs)))
        self.total_params = float(max(1, sum(d["params"] for d in attrs)))

    def node_features(self, prefix: Tensor) -> Tensor:
        """[B, nodes, F]: the graph's node features with widths scaled by `prefix` ([B, steps] keep ratios; 1 for
        a step not decided yet)."""
        ratios = torch.cat([prefix.double(), prefix.new_ones(prefix.size(0), 1).double()], dim=1)
        r_out, r_in = ratios[:, self.out_idx], ratios[:, self.in_idx]
        cin, cout = self.raw[:, 0] * r_in, self.raw[:, 1] * r_out
        macs, params = self.raw[:, 2] * r_in * r_out, self.raw[:, 3] * r_in * r_out
        x = self.data.x.unsqueeze(0).repeat(prefix.size(0), 1, 1)
        tm, tp = self.total_macs, self.total_params
        scaled = {cols.C_IN: torch.log2(cin + 1) / 12, cols.C_OUT: torch.log2(cout + 1) / 12,
                  cols.MACS_SHARE: macs / tm, cols.MACS_LOG: torch.log1p(macs) / math.log1p(tm),
                  cols.PARAMS_SHARE: params / tp, cols.PARAMS_LOG: torch.log1p(params) / math.log1p(tp)}  # fmt: skip
        for k, v in scaled.items():  # the same scaling as encoder.features.node_features
            x[..., cols.NUMERIC + k] = v.to(x.dtype)
        return x

    def rows(self, steps: Tensor, prefix: Tensor) -> Tensor:
        """[B, dim]: the state row of step steps[b] with the ratios prefix[b] applied before it."""
        graph, groups = self.encoder(self.data, self.info, x=self.node_features(prefix))
        if self.standardize:
            groups = standardize_rows(groups)
        pick = groups[torch.arange(groups.size(0)), steps]
        return torch.cat([graph, pick], dim=-1)


AMC_FEATURES = 9


class HandStates(nn.Module):
    """AMC: per step [index, op type, C_in, C_out, stride, kernel, log weight size, MACs share, size], fixed."""

    kind = "amc"

    def __init__(self, analysis: Any) -> None:
        super().__init__()
        groups = _prunable(analysis)
        view = graph_view(analysis.model)
        by_name = {n.name: n for n in analysis.model.nodes}
        total = max(1, analysis.cost.total_macs)
        rows = []
        for i, g in enumerate(groups):
            node = next((by_name[p] for p in g.producers if p in by_name), None)
            macs, cin, cout, kernel, stride, weight, op = 0, 0, g.size, 1, 1, 0, 0.0
            if node is not None:
                d = view.nodes[node.name]
                macs, cin, cout, weight = d["macs"], d["c_in"], d["c_out"], d["weight"]
                kshape = attr(node, "kernel_shape", [1])
                kernel = int(max(kshape)) if kshape else 1
                stride = d["stride"]
                op = {"Conv": 0.0 if d["groups"] == 1 else 0.5, "Gemm": 1.0, "MatMul": 1.0}.get(node.op_type, 0.25)
            rows.append([
                i / max(1, len(groups) - 1), op, math.log2(cin + 1) / 12, math.log2(cout + 1) / 12,
                stride / 4, kernel / 7, math.log1p(weight) / 20, macs / total, math.log2(g.size + 1) / 12,
            ])  # fmt: skip
        self.register_buffer("table", torch.tensor(rows, dtype=torch.float32).reshape(len(rows), AMC_FEATURES))
        self.dim = AMC_FEATURES

    def forward(self) -> Tensor:
        """[steps, dim]: the fixed table."""
        return self.table


class HybridStates(GraphStates):
    """The GNN's state beside AMC's hand-made row of the same group: [graph, group embedding, hand features].

    Asks whether the embedding adds to AMC's features rather than replaces them (issue 19: AMC's state led on
    the held-out ResNet-32)."""

    decoder = "hybrid"

    def __init__(self, analysis: Any, encoder: GraphEncoder | None = None, standardize: bool = True) -> None:
        super().__init__(analysis, encoder, standardize)
        self.hand = HandStates(analysis)
        self.dim += self.hand.dim

    def forward(self) -> Tensor:
        """[steps, dim]: GraphStates' rows with the hand table appended."""
        return torch.cat([super().forward(), self.hand()], dim=1)


DECODERS = {"groups": GraphStates, "lstm": LSTMGraphStates, "stepwise": StepGraphStates, "hybrid": HybridStates}


def source_optimizer(source: nn.Module, lr_encoder: float | None, lr_actor: float) -> tuple[list[nn.Parameter], torch.optim.Adam | None]:
    """The state source's trainable parameters and their Adam (both agents): `lr_encoder`, or the
    actor's rate when it is None; 0 leaves the encoder as built. None without trainable parameters (amc)."""
    params = [p for p in source.parameters() if p.requires_grad]
    lr = lr_actor if lr_encoder is None else lr_encoder
    return params, torch.optim.Adam(params, lr=lr) if params else None


class FixedStates(nn.Module):
    """A given fixed table of static states (tests, synthetic problems)."""

    kind = "fixed"

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.float())
        self.dim = table.size(1)

    def forward(self) -> Tensor:
        """The table."""
        return self.table
