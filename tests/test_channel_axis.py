"""Channel axis in any position: NHWC blocks (ConvNeXt), token MLPs (ViT), Gather and strided Slice on channels.

Each net is a small torch module exported with the TorchScript exporter; oracles 1-3 (tests.helpers_onnx)
hold for keep-all, a random plan and an L1 plan at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agmc_onnx.analysis import Analysis, analyze
from agmc_onnx.model import load
from agmc_onnx.plan import Plan, plan_from_ratios
from tests.conftest import export, random_plan
from tests.helpers_onnx import check_oracles


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
    """Single-head self-attention over tokens followed by an MLP: q/k/v stay frozen, the MLP hidden does not."""

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


class NhwcFlatten(nn.Module):
    """Conv -> NHWC -> Flatten -> Linear: the Linear's features interleave the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        y = self.c2(torch.relu(self.c1(x))).permute(0, 2, 3, 1)
        return self.fc(torch.flatten(y, 1))


class ChannelPick(nn.Module):
    """Conv -> Gather of constant channel indices / strided channel Slice -> conv."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.c2 = nn.Conv2d(5 if mode == "gather" else 6, 4, 3, padding=1)
        self.register_buffer("idx", torch.tensor([0, 3, 4, 7, 11]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits-like map."""
        y = torch.relu(self.c1(x))
        if self.mode == "gather":
            y = torch.index_select(y, 1, self.idx)
        elif self.mode == "stride":
            y = y[:, 1::2]
        else:  # reversed stride
            y = torch.flip(y, [1])[:, ::2]
        return self.c2(y).mean((2, 3))


class ScalarPick(nn.Module):
    """x[:, 2] (a scalar channel index) added back as a gate: that channel must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits-like map."""
        y = torch.relu(self.c1(x))
        return (self.c2(y) * y[:, 2:3].sigmoid() + y[:, 5].unsqueeze(1)).mean((2, 3))


def _analyse(module: nn.Module, tmp_path: Path, opset: int = 13, size: int = 16) -> tuple[Path, Analysis]:
    """Export with random weights and analyse."""
    torch.manual_seed(0)
    path = export(module, (3, size, size), tmp_path / "net.onnx", keep_bn=False, opset=opset)
    return path, analyze(load(path))


def _all_oracles(path: Path, a: Analysis) -> None:
    """Oracles 1-3 for a random plan and an L1 plan at ratio 0.5 (keep-all is checked inside)."""
    assert a.prunable_groups(), "nothing prunable"
    check_oracles(path, random_plan(a, seed=1))
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)
    check_oracles(path, plan)


def _group_of(a: Analysis, producer_part: str) -> list:
    """Groups whose producers include a node whose name contains `producer_part`."""
    return [g for g in a.groups if any(producer_part in p for p in g.producers)]


@pytest.mark.parametrize("opset", [13, 17])
def test_convnext_block_hidden_prunable(tmp_path: Path, opset: int) -> None:
    """NHWC MLP: fc1's 4x hidden width is a prunable group; the LayerNorm'd stream is frozen."""
    path, a = _analyse(TinyConvNeXt(), tmp_path, opset)
    hidden = [g for g in a.prunable_groups() if g.size == 32]
    assert len(hidden) == 2, [(g.size, g.producers, g.frozen_reason) for g in a.groups]
    for g in hidden:
        roles = {(m.role, m.axis) for m in g.members}
        assert ("producer", 1) in roles and ("consumer", 0) in roles  # fc1 columns, fc2 rows
        assert any(m.role == "norm" for m in g.members)  # fc1's bias
    stream = _group_of(a, "stem")[0]
    assert not stream.prunable and "channel axis" in str(stream.frozen_reason)
    _all_oracles(path, a)


def test_vit_token_mlp_prunable(tmp_path: Path) -> None:
    """Tokens [N, T, C]: the MLP hidden (36) is prunable after the token Transpose; the stream is frozen."""
    path, a = _analyse(TinyViT(), tmp_path)
    assert [g.size for g in a.prunable_groups()] == [36]
    assert not _group_of(a, "patch")[0].prunable
    _all_oracles(path, a)


def test_attention_stays_frozen(tmp_path: Path) -> None:
    """q and k meet in a MatMul of two activations: frozen; the patch conv (read only by the q/k/v
    Linears) and the MLP hidden after attention are prunable."""
    path, a = _analyse(TinyAttention(), tmp_path)
    prunable = sorted((g.size, g.producers[0]) for g in a.prunable_groups())
    assert prunable == [(8, "/patch/Conv"), (16, "/fc1/MatMul")], [(g.size, g.producers, g.frozen_reason) for g in a.groups]
    frozen = [g for g in a.groups if not g.prunable and g.size == 8]
    assert any("two activations" in str(g.frozen_reason) for g in frozen)
    _all_oracles(path, a)


def test_nhwc_flatten_into_linear(tmp_path: Path) -> None:
    """Flatten of an NHWC map: the Linear reads channel c at features s*C + c (interleaved)."""
    path, a = _analyse(NhwcFlatten(), tmp_path, size=8)
    g = next(g for g in a.prunable_groups() if g.size == 6)
    fc = next(m for m in g.members if m.role == "consumer" and m.axis == 1 and len(m.positions) == 96)
    assert list(fc.channels[:7]) == [0, 1, 2, 3, 4, 5, 0]
    _all_oracles(path, a)


@pytest.mark.parametrize("mode", ["gather", "stride", "reverse"])
def test_channel_gather_and_strided_slice(tmp_path: Path, mode: str) -> None:
    """Constant-index Gather and strided/reversed Slice on channels keep c1 prunable (indices rewritten)."""
    path, a = _analyse(ChannelPick(mode), tmp_path)
    assert any(g.size == 12 for g in a.prunable_groups()), [(g.size, g.frozen_reason) for g in a.groups]
    _all_oracles(path, a)
    # a plan that drops some gathered channels and keeps others
    g = next(g for g in a.prunable_groups() if g.size == 12)
    check_oracles(path, Plan(kept={g.id: [1, 2, 3, 5, 8, 11]}))


def test_scalar_channel_index_freezes_that_channel(tmp_path: Path) -> None:
    """x[:, 5] reads one channel by position: its group keeps everything, the reason says why."""
    path, a = _analyse(ScalarPick(), tmp_path)
    g = next(g for g in a.groups if g.size == 8)
    assert not g.prunable and "one channel by index" in str(g.frozen_reason)
    check_oracles(path, Plan(kept={}))


def test_transpose_moves_axis_not_freezes(tmp_path: Path) -> None:
    """The analysis records where each tensor's channels are: NHWC after the permute, NCHW after the inverse."""
    _, a = _analyse(TinyConvNeXt(), tmp_path)
    nodes = {n.name: n for n in a.model.nodes}
    moved = [n for n in nodes.values() if n.op_type == "Transpose"]
    assert moved and all(
        a.channel_axis(n.output[0]) == list(np.array(n.attribute[0].ints)).index(a.channel_axis(n.input[0]))
        for n in moved
    )
    assert not any("Transpose" in r for _, r in a.frozen)


class Shuffle3(nn.Module):
    """Conv -> channel shuffle with 3 groups -> conv; `mix` sums over the group axis instead (mixes channels)."""

    def __init__(self, mix: bool = False) -> None:
        super().__init__()
        self.mix = mix
        self.a = nn.Conv2d(3, 12, 3, padding=1)
        self.b = nn.Conv2d(4 if mix else 12, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled map."""
        y = torch.relu(self.a(x))
        n = y.shape[0]
        z = y.view(n, 3, 4, 8, 8)
        y = z.sum(1) if self.mix else z.transpose(1, 2).reshape(n, 12, 8, 8)
        return self.b(y).mean((2, 3))


def test_channel_shuffle_three_groups(tmp_path: Path) -> None:
    """Shuffle in 3 groups: in-group positions united (4 classes of 3), Reshape constants rewritten."""
    path, a = _analyse(Shuffle3(), tmp_path, size=8)
    g = next(g for g in a.groups if any("/a/" in p for p in g.producers))
    assert g.prunable and g.size == 4
    _all_oracles(path, a)
    check_oracles(path, Plan(kept={g.id: [1, 3]}))


def test_summing_a_split_channel_axis_freezes(tmp_path: Path) -> None:
    """Reducing over the group axis of a split channel axis mixes channels: frozen, with the reason."""
    _, a = _analyse(Shuffle3(mix=True), tmp_path, size=8)
    g = next(g for g in a.groups if any("/a/" in p for p in g.producers))
    assert not g.prunable and "split" in str(g.frozen_reason)
