"""Reshape and Expand rules (agmc_onnx/ops/reshape.py) and their ShapeChannel rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx import helper, numpy_helper
from torch import nn

from agmc_onnx.analysis import analyze
from agmc_onnx.model import load
from agmc_onnx.ops.reshape import ShapeChannel
from agmc_onnx.plan import Plan, plan_from_ratios
from tests.conftest import check_plan, export
from tests.helpers_onnx import check_oracles
from tests.ops.helpers import all_oracles, analyse_torch, const, conv, group_of, tiny, weight


def test_flatten_reshape_target_follows_the_kept_width() -> None:
    """Reshape(a, [0, 128]) of an [N, 8, 4, 4] map feeds a Linear: each channel is 16 features, and
    ShapeChannel writes 16 x the kept channels into the target."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("Reshape", ["a", "target"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "B"], ["out"], name="fc", transB=1)],
             [weight("w1", 8, 3, 1, 1), const("target", [0, 128], np.int64), weight("B", 4, 128, seed=1)],
             {"out": ["N", 4]}, x=("N", 3, 4, 4))  # fmt: skip
    assert a.hooks == [("flat", ShapeChannel("f", "target", 1))]
    fc = next(m for m in group_of(a, "c1").members if m.tensor == "B")
    assert fc.axis == 1 and list(fc.channels[:17]) == [0] * 16 + [1]
    out = check_plan(a, Plan({group_of(a, "c1").id: [2, 5, 6]}))
    target = next(t for t in out.graph.initializer if t.name == next(n for n in out.graph.node if n.name == "flat").input[1])
    assert numpy_helper.to_array(target).tolist() == [0, 48]


def test_expand_shape_follows_the_kept_width() -> None:
    """Expand of a pooled [N, 8, 1, 1] map to [1, 8, 4, 4]: ShapeChannel writes the kept width into entry 1."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
              helper.make_node("Expand", ["p", "shape"], ["e"], name="expand"), conv("e", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), const("shape", [1, 8, 4, 4], np.int64), weight("w2", 2, 8, 1, 1, seed=1)],
             {"out": ["N", 2, 4, 4]}, x=("N", 3, 4, 4))  # fmt: skip
    assert a.hooks == [("expand", ShapeChannel("e", "shape", 1))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [0, 7]}))
    shape = next(t for t in out.graph.initializer if t.name == next(n for n in out.graph.node if n.name == "expand").input[1])
    assert numpy_helper.to_array(shape).tolist() == [1, 2, 4, 4]


def test_channel_shuffle_unites_in_group_positions(analyses: dict) -> None:
    """Shuffle of b's 8 channels in 2 groups: channel j of each group is one class (4 classes), so both
    groups keep the same channels and the Reshape stays valid; a and c stay prunable."""
    a = analyses["shuffle"]
    status = {g.producers[0].split("/")[1]: g for g in a.groups}
    assert status["a"].prunable and status["c"].prunable
    b = status["b"]
    assert b.prunable and b.size == 4
    producer = next(m for m in b.members if m.role == "producer" and m.axis == 0)
    assert producer.channels == (0, 1, 2, 3, 0, 1, 2, 3)
    consumer = next(m for m in b.members if m.role == "consumer")
    assert consumer.channels == (0, 0, 1, 1, 2, 2, 3, 3)  # c reads the shuffled order
    assert [type(r) for _, r in a.hooks].count(ShapeChannel) == 2


class _View(torch.nn.Module):
    """Flatten written as x.view(x.size(0), -1) (run-time shape) and as reshape(-1, C*H*W)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 6, 3, padding=1)
        self.fc, self.fc2 = torch.nn.Linear(6 * 16, 4), torch.nn.Linear(8 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two heads summed."""
        a = torch.relu(self.c(x))
        y = torch.nn.functional.max_pool2d(torch.relu(self.c2(a)), 2)
        return self.fc(y.view(y.size(0), -1)) + self.fc2(a.reshape(-1, 8 * 64))


def test_view_and_reshape_into_linear(tmp_path: Path) -> None:
    """Both flatten spellings keep the convs before them prunable, and surgery rewrites the shapes."""
    torch.manual_seed(0)
    a = analyze(load(export(_View(), (3, 8, 8), tmp_path / "v.onnx")))
    assert len(a.prunable_groups()) == 2, [(g.size, g.frozen_reason) for g in a.groups]
    check_plan(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))


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
    path, a = analyse_torch(Shuffle3(), tmp_path, size=8)
    g = next(g for g in a.groups if any("/a/" in p for p in g.producers))
    assert g.prunable and g.size == 4
    all_oracles(path, a)
    check_oracles(path, Plan(kept={g.id: [1, 3]}))


def test_summing_a_split_channel_axis_freezes(tmp_path: Path) -> None:
    """Reducing over the group axis of a split channel axis mixes channels: frozen, with the reason."""
    _, a = analyse_torch(Shuffle3(mix=True), tmp_path, size=8)
    g = next(g for g in a.groups if any("/a/" in p for p in g.producers))
    assert not g.prunable and "split" in str(g.frozen_reason)
