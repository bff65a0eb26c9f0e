"""ops/attention.py: products of two activations (q k^T, attention x v) as MatMul or Einsum; whole heads
are one channel each (their q, k, v rows and out-projection columns go together)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from agmc_onnx.plan import Plan
from agmc_onnx.surgery import prune
from tests.conftest import feeds, run
from tests.ops.helpers import all_oracles, analyse_torch


class Patches(nn.Module):
    """3x16x16 -> 16 tokens of `dim` (conv patch embedding), then the attention under test, mean, head."""

    def __init__(self, dim: int, attn: nn.Module) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.attn = attn
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head((t + self.attn(t)).mean(1))


class FusedHeads(nn.Module):
    """timm-style attention: one qkv Linear, reshape (B, N, 3, H, d), permute, unbind; a learned per-head
    relative position bias added to the scores (Swin/MaxViT style); explicit softmax(q k^T * scale) v."""

    def __init__(self, dim: int = 12, heads: int = 3, tokens: int = 16, einsum: bool = False) -> None:
        super().__init__()
        self.h, self.d, self.einsum = heads, dim // heads, einsum
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(1, heads, tokens, tokens) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, C]."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, self.d).permute(2, 0, 3, 1, 4).unbind(0)
        if self.einsum:
            s = torch.einsum("bhid,bhjd->bhij", q, k) * self.d**-0.5 + self.bias
            o = torch.einsum("bhij,bhjd->bhid", s.softmax(-1), v)
        else:
            o = ((q @ k.transpose(-2, -1)) * self.d**-0.5 + self.bias).softmax(-1) @ v
        return self.proj(o.transpose(1, 2).reshape(b, n, c))


class TorchMHA(nn.Module):
    """torch's nn.MultiheadAttention (heads merged into the batch axis inside)."""

    def __init__(self, dim: int = 12, heads: int = 3) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, C]."""
        return self.mha(x, x, x, need_weights=False)[0]


def _heads_group(a, producer_part: str):  # type: ignore[no-untyped-def]
    """The group of attention heads whose producers include a node named with `producer_part`."""
    return next(g for g in a.groups if any(producer_part in p for p in g.producers) and g.class_width > 1)


@pytest.mark.parametrize("opset", [14, 17])
@pytest.mark.parametrize("einsum", [False, True], ids=["matmul", "einsum"])
def test_fused_heads_with_relative_bias(tmp_path: Path, opset: int, einsum: bool) -> None:
    """Fused qkv: one group of 3 heads (3 x 4 qkv columns each), the relative bias sliced per head on its
    axis 1, the out-projection's rows consumed per head; whole heads pruned == masked; MACs counted."""
    path, a = analyse_torch(Patches(12, FusedHeads(einsum=einsum)), tmp_path, opset=opset)
    g = _heads_group(a, "qkv")
    assert g.prunable and g.size == 3 and g.class_width == 12, (g.size, g.class_width, g.frozen_reason)
    roles = {(m.role, m.axis) for m in g.members}
    assert ("producer", 1) in roles and ("consumer", 0) in roles  # qkv columns, out-projection rows
    assert any(m.role == "norm" and m.axis == 1 and a.model.inits[m.tensor].shape == (1, 3, 16, 16) for m in g.members)
    assert all(gr.prunable for gr in a.groups if gr.size != 5), [(gr.size, gr.frozen_reason) for gr in a.groups]
    all_oracles(path, a)
    out = prune(a, Plan({g.id: [0, 2]}))
    bias = next(t for t in out.graph.initializer if list(t.dims) == [1, 2, 16, 16])
    assert bias is not None
    run(out, feeds(a.model.proto, batch=3))  # the rewritten reshapes run at another batch size


@pytest.mark.parametrize("opset", [14, 17])
def test_torch_multihead_attention(tmp_path: Path, opset: int) -> None:
    """nn.MultiheadAttention merges the heads into the batch axis ([N, B*H, d]) and splits them out again:
    the heads still form one group of 3, and the stream, read by in_proj, stays prunable."""
    path, a = analyse_torch(Patches(12, TorchMHA()), tmp_path, opset=opset)
    g = _heads_group(a, "")
    assert g.prunable and g.size == 3, [(gr.size, gr.class_width, gr.frozen_reason) for gr in a.groups]
    assert all(gr.prunable for gr in a.groups if gr.size != 5), [(gr.size, gr.frozen_reason) for gr in a.groups]
    all_oracles(path, a)
    run(prune(a, Plan({g.id: [1]})), feeds(a.model.proto, batch=3))
