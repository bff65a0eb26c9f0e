"""Property tests (40 derandomized examples by default, 200 with -m slow): random small conv graphs from torch, exported to ONNX, satisfy oracles 1-3 at random plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from fixtures.engine_nets import randomize_bn_
from tests.helpers_onnx import check_oracles, export_torch

BLOCKS = (
    "conv", "residual", "concat", "dense", "diamond", "depthwise", "se", "grouped", "pool", "split",
    "shuffle", "convt", "instnorm", "affine", "sub", "selfcat", "layernorm", "upsample", "pad", "max2",
)  # fmt: skip
ACTS = ("relu", "relu6", "leaky", "hardswish", "swish", "sigmoid", "prelu", "none")


@dataclass(frozen=True)
class Block:
    """One block: its kind and the small integers that parametrise it."""

    kind: str
    width: int  # output channels for conv/concat branches, hidden width for SE/residual
    act: str
    bn: bool
    k: int = 3
    stride: int = 1
    groups: int = 2


@dataclass(frozen=True)
class Spec:
    """A random network: stem width, blocks, head kind."""

    stem: int
    blocks: tuple[Block, ...]
    head: str  # "gap" (GAP + Linear) or "flatten" (Flatten + Linear on the remaining spatial map)
    size: int = 12
    seed: int = 0
    extra: dict = field(default_factory=dict, compare=False)


def _act(name: str, c: int) -> nn.Module:
    """An activation module by name (swish as x*sigmoid(x))."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "leaky":
        return nn.LeakyReLU(0.1)
    if name == "hardswish":
        return nn.Hardswish()
    if name == "swish":
        return nn.SiLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "prelu":
        return nn.PReLU(c)
    return nn.Identity()


def _cba(cin: int, cout: int, b: Block, k: int | None = None, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (+BN) + activation."""
    k = b.k if k is None else k
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=not b.bn)]
    if b.bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(_act(b.act, cout))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x), f = conv-act-conv."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = nn.Sequential(_cba(c, b.width, b), nn.Conv2d(b.width, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual add."""
        return x + self.f(x)


class Concat(nn.Module):
    """cat(f(x), g(x)) with different widths (Inception-like)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = _cba(c, b.width, b, k=1)
        self.g = _cba(c, b.width + 2, b, k=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two branches concatenated."""
        return torch.cat([self.f(x), self.g(x)], 1)


class Dense(nn.Module):
    """cat(x, f(x)) (DenseNet-like)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = _cba(c, b.width, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input concatenated with new features."""
        return torch.cat([x, self.f(x)], 1)


class Diamond(nn.Module):
    """f(x) + g(x), two convs of the same width added (a shared new group)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = nn.Conv2d(c, b.width, 3, 1, 1)
        self.g = nn.Conv2d(c, b.width, 1)
        self.act = _act(b.act, b.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of two branches, then activation."""
        return self.act(self.f(x) + self.g(x))


class SE(nn.Module):
    """x * sigmoid(W2 relu(W1 GAP(x)))."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, b.width, 1), nn.ReLU(), nn.Conv2d(b.width, c, 1),
            nn.Hardsigmoid() if b.act == "hardswish" else nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate channels."""
        return x * self.f(x)


class SplitCat(nn.Module):
    """Split the channels in two, convolve one half, concatenate back (ShuffleNet-like, no shuffle)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.half = c // 2
        self.f = _cba(c - self.half, b.width, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x[:, :h] passes, x[:, h:] is convolved."""
        return torch.cat([x[:, : self.half], self.f(x[:, self.half :])], 1)


class Shuffle(nn.Module):
    """Channel shuffle (Reshape-Transpose-Reshape) between two grouped convs, as in ShuffleNet."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.g = 2
        self.width = 2 * b.width
        self.f = _cba(c, self.width, b, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv then shuffle its channels."""
        y = self.f(x)
        n, c, h, w = y.shape
        return y.view(n, self.g, c // self.g, h, w).transpose(1, 2).reshape(n, c, h, w)


class Affine(nn.Module):
    """x * a + b with per-channel constants broadcast as [1, C, 1, 1]."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(1, c, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel scale and shift."""
        return x * self.a + self.b


class SubRes(nn.Module):
    """x - f(x) (a residual Sub)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual Sub."""
        return x - self.f(x)


class SelfCat(nn.Module):
    """cat([x, x]): the same channels twice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Duplicate the channels."""
        return torch.cat([x, x], 1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis through permutes (ConvNeXt style)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each position's channels."""
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Max2(nn.Module):
    """max(f(x), g(x)): an element-wise op over two branches that the engine may not know."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.f = nn.Conv2d(c, b.width, 1)
        self.g = nn.Conv2d(c, b.width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum."""
        return torch.maximum(self.f(x), self.g(x))


class RandomNet(nn.Module):
    """The network a Spec describes; `channels` is the width after each block."""

    def __init__(self, spec: Spec, in_ch: int = 3, classes: int = 5) -> None:
        super().__init__()
        first = spec.blocks[0] if spec.blocks else Block("conv", spec.stem, "relu", True)
        layers: list[nn.Module] = [_cba(in_ch, spec.stem, first, k=3)]
        c, size = spec.stem, spec.size
        for b in spec.blocks:
            if b.kind == "conv":
                stride = b.stride if size >= 6 else 1
                layers.append(_cba(c, b.width, b, stride=stride))
                size = (size + stride - 1) // stride
                c = b.width
            elif b.kind == "residual":
                layers.append(Residual(c, b))
            elif b.kind == "concat":
                layers.append(Concat(c, b))
                c = 2 * b.width + 2
            elif b.kind == "dense":
                layers.append(Dense(c, b))
                c += b.width
            elif b.kind == "diamond":
                layers.append(Diamond(c, b))
                c = b.width
            elif b.kind == "depthwise":
                mult = 2 if b.groups == 3 else 1
                layers.append(_cba(c, c * mult, b, groups=c))
                c *= mult
            elif b.kind == "se":
                layers.append(SE(c, b))
            elif b.kind == "grouped":
                g = b.groups if c % b.groups == 0 else 1
                cout = b.width * g
                layers.append(_cba(c, cout, b, groups=g))
                c = cout
            elif b.kind == "pool":
                if size >= 4:
                    layers.append(nn.MaxPool2d(2) if b.act in ("relu", "leaky", "none") else nn.AvgPool2d(2))
                    size //= 2
            elif b.kind == "split":
                if c >= 2:
                    layers.append(SplitCat(c, b))
                    c = c // 2 + b.width
            elif b.kind == "shuffle":
                layers.append(Shuffle(c, b))
                c = 2 * b.width
            elif b.kind == "convt":
                stride = 2 if size <= 6 else 1
                layers += [nn.ConvTranspose2d(c, b.width, 2 if stride == 2 else 3, stride, 0 if stride == 2 else 1), _act(b.act, b.width)]
                size *= stride
                c = b.width
            elif b.kind == "instnorm":
                layers += [nn.Conv2d(c, b.width, 3, 1, 1), nn.InstanceNorm2d(b.width, affine=True), _act(b.act, b.width)]
                c = b.width
            elif b.kind == "affine":
                layers.append(Affine(c))
            elif b.kind == "sub":
                layers.append(SubRes(c, b))
            elif b.kind == "selfcat":
                layers.append(SelfCat())
                c *= 2
            elif b.kind == "layernorm":
                layers += [nn.Conv2d(c, b.width, 1), ChannelLayerNorm(b.width), nn.GELU()]
                c = b.width
            elif b.kind == "upsample":
                if size <= 8:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    size *= 2
            elif b.kind == "pad":
                layers.append(nn.ZeroPad2d(1))
                size += 2
            elif b.kind == "max2":
                layers.append(Max2(c, b))
                c = b.width
        self.features = nn.Sequential(*layers)
        self.flatten = spec.head == "flatten"
        feats = c * size * size if self.flatten else c
        self.fc = nn.Linear(feats, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features then GAP (or Flatten) + Linear."""
        y = self.features(x)
        y = torch.flatten(y, 1) if self.flatten else y.mean((2, 3))
        return self.fc(y)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Seeded weights; BN with non-trivial statistics; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.5 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                randomize_bn_(m, gen)
            elif isinstance(m, (nn.InstanceNorm2d, nn.LayerNorm, Affine)):
                for pname, t in m.named_parameters(recurse=False):
                    scale = pname in ("weight", "a")
                    t.copy_(0.5 + torch.rand(t.shape, generator=gen) if scale else torch.randn(t.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.3)
    return model.eval()


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    """One random block."""
    return Block(
        kind=draw(st.sampled_from(BLOCKS)),
        width=draw(st.integers(2, 12)),
        act=draw(st.sampled_from(ACTS)),
        bn=draw(st.booleans()),
        k=draw(st.sampled_from((1, 3))),
        stride=draw(st.sampled_from((1, 1, 2))),
        groups=draw(st.sampled_from((2, 3, 4))),
    )


@st.composite
def specs(draw: st.DrawFn, max_blocks: int = 6) -> Spec:
    """A random network spec."""
    return Spec(
        stem=draw(st.sampled_from((4, 6, 8, 12))),
        blocks=tuple(draw(st.lists(blocks(), min_size=2, max_size=max_blocks))),
        head=draw(st.sampled_from(("gap", "gap", "flatten"))),
        seed=draw(st.integers(0, 2**16)),
    )


# ---------------------------------------------------------------------------------------------------
# The property: oracles 1-3 hold for random graphs and random keep ratios.


def _export(spec: Spec, fold: bool, path: Path) -> Path:
    """Build the spec's net with seeded weights and export it."""
    return export_torch(randomize(RandomNet(spec), spec.seed), (3, spec.size, spec.size), path, fold=fold)


def _random_plan(analysis: Any, seed: int, round_to: int, importance: str) -> Any:
    """A plan from random keep ratios in [0.05, 1] for every prunable group."""
    from agmc_onnx.plan import plan_from_ratios

    rng = np.random.default_rng(seed)
    ratios = {g.id: float(rng.uniform(0.05, 1.0)) for g in analysis.groups if g.prunable}
    return plan_from_ratios(analysis, ratios, importance=importance, round_to=round_to)


def _check(tmp: Path, spec: Spec, fold: bool, seed: int, round_to: int, importance: str) -> None:
    """Export, analyse, plan, and hold the oracles."""
    from agmc_onnx.analysis import analyze
    from agmc_onnx.model import load

    path = _export(spec, fold, tmp / "net.onnx")
    analysis = analyze(load(path))
    plan = _random_plan(analysis, seed, round_to, importance)
    for group in analysis.groups:
        kept = plan.kept.get(group.id, list(range(group.size)))
        assert kept == sorted(set(kept)) and 0 < len(kept) <= group.size
        if not group.prunable:
            assert len(kept) == group.size, f"frozen group {group.id} was pruned"
            assert group.frozen_reason
    check_oracles(path, plan, analysis)


SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


@settings(max_examples=40, **SETTINGS)
@given(
    spec=specs(),
    fold=st.booleans(),
    seed=st.integers(0, 2**16),
    round_to=st.sampled_from((1, 1, 2, 4)),
    importance=st.sampled_from(("l1", "l2")),
)
def test_random_graph_oracles(
    tmp_path_factory: pytest.TempPathFactory, spec: Spec, fold: bool, seed: int, round_to: int, importance: str
) -> None:
    """Random conv graphs (branches, residuals, concats, depthwise, SE, grouped) satisfy oracles 1-3."""
    _check(tmp_path_factory.mktemp("rg"), spec, fold, seed, round_to, importance)


@pytest.mark.slow
@settings(max_examples=200, **SETTINGS)
@given(spec=specs(max_blocks=10), fold=st.booleans(), seed=st.integers(0, 2**16), round_to=st.sampled_from((1, 2, 4)))
def test_random_graph_oracles_many(
    tmp_path_factory: pytest.TempPathFactory, spec: Spec, fold: bool, seed: int, round_to: int
) -> None:
    """The same property over many more and deeper graphs (slow run)."""
    _check(tmp_path_factory.mktemp("rg"), spec, fold, seed, round_to, "l1")


@pytest.mark.parametrize("kind", BLOCKS)
def test_each_block_kind(tmp_path: Path, kind: str) -> None:
    """Every block kind alone (plus a conv before it) satisfies the oracles at a fixed plan."""
    spec = Spec(stem=8, blocks=(Block("conv", 8, "relu", True), Block(kind, 6, "relu", True, groups=2)), head="gap")
    _check(tmp_path, spec, fold=False, seed=3, round_to=1, importance="l1")
