"""Channel axis in any position: NHWC blocks (ConvNeXt), token MLPs (ViT), attention.

Each net is a small torch module exported with the TorchScript exporter; oracles 1-3 (tests.helpers_onnx)
hold for keep-all, a random plan and an L1 plan at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agmc_onnx.analysis import Analysis
from tests.ops.helpers import all_oracles, analyse_torch


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, NHWC LayerNorm, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + scale * MLP(LN(dw(x))) with the MLP in NHWC."""
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.scale * y


class TinyConvNeXt(nn.Module):
    """Stem conv, two ConvNeXt blocks, GAP, head."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class TinyViT(nn.Module):
    """Patch conv, tokens [N, T, C], one pre-norm MLP block with a residual, token mean, head."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 3 * dim)
        self.fc2 = nn.Linear(3 * dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.fc2(nn.functional.gelu(self.fc1(self.norm(t))))
        return self.head(t.mean(1))


class TinyAttention(nn.Module):
    """Single-head self-attention over tokens followed by an MLP."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        t = self.patch(x).flatten(2).transpose(1, 2)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), dim=-1) @ self.v(t)
        return self.fc2(torch.relu(self.fc1(a))).mean(1)


def _group_of(a: Analysis, producer_part: str) -> list:
    """Groups whose producers include a node whose name contains `producer_part`."""
    return [g for g in a.groups if any(producer_part in p for p in g.producers)]


@pytest.mark.parametrize("opset", [13, 17])
def test_convnext_block_hidden_prunable(tmp_path: Path, opset: int) -> None:
    """NHWC MLP: fc1's 4x hidden width is a prunable group; the LayerNorm'd stream is prunable too, its
    LayerNorms recorded as statistics of it (the oracle normalises over the kept channels)."""
    path, a = analyse_torch(TinyConvNeXt(), tmp_path, opset)
    hidden = [g for g in a.prunable_groups() if g.size == 32]
    assert len(hidden) == 2, [(g.size, g.producers, g.frozen_reason) for g in a.groups]
    for g in hidden:
        roles = {(m.role, m.axis) for m in g.members}
        assert ("producer", 1) in roles and ("consumer", 0) in roles  # fc1 columns, fc2 rows
        assert any(m.role == "norm" for m in g.members)  # fc1's bias
    stream = _group_of(a, "stem")[0]
    assert stream.prunable and len(stream.stats) == (2 if opset >= 17 else 4), stream.stats
    assert {m.role for m in stream.members} == {"producer", "consumer", "norm"}
    all_oracles(path, a)


def test_vit_token_mlp_prunable(tmp_path: Path) -> None:
    """Tokens [N, T, C]: the MLP hidden (36) is prunable after the token Transpose, and so is the stream
    through the LayerNorm (decomposed at opset 13: its mean and variance are statistics of the stream)."""
    path, a = analyse_torch(TinyViT(), tmp_path)
    assert [g.size for g in a.prunable_groups()] == [12, 36]
    stream = _group_of(a, "patch")[0]
    assert stream.prunable and stream.stats and "/fc2/MatMul" in stream.producers
    all_oracles(path, a)


def test_single_head_attention_prunes_qk_and_v(tmp_path: Path) -> None:
    """Single head: q and k meet in q k^T, contracted over their features, so q's and k's features are one
    group (kept together); v's features pass through attention x v into fc1, a group of their own."""
    path, a = analyse_torch(TinyAttention(), tmp_path)
    prunable = sorted((g.size, tuple(g.producers)) for g in a.prunable_groups())
    assert prunable == [(8, ("/patch/Conv",)), (8, ("/q/MatMul", "/k/MatMul")), (8, ("/v/MatMul",)),
                        (16, ("/fc1/MatMul",))], [(g.size, g.producers, g.frozen_reason) for g in a.groups]
    all_oracles(path, a)


def test_transpose_moves_axis_not_freezes(tmp_path: Path) -> None:
    """The analysis records where each tensor's channels are: NHWC after the permute, NCHW after the inverse."""
    _, a = analyse_torch(TinyConvNeXt(), tmp_path)
    nodes = {n.name: n for n in a.model.nodes}
    moved = [n for n in nodes.values() if n.op_type == "Transpose"]
    assert moved and all(
        a.channel_axis(n.output[0]) == list(np.array(n.attribute[0].ints)).index(a.channel_axis(n.input[0]))
        for n in moved
    )
    assert not any("Transpose" in r for _, r in a.frozen)
