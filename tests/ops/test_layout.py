"""Channel-axis layout rules (agmc_onnx/ops/layout.py): Concat, Split, Slice, Gather, Flatten, (Un)Squeeze,
and the rewrites SplitSizes, SliceChannel, SliceToGather, GatherChannel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from agmc_onnx.analysis import Analysis
from agmc_onnx.ops.layout import GatherChannel, SliceChannel, SliceToGather, SplitSizes
from agmc_onnx.plan import Plan
from tests.conftest import check_plan
from tests.helpers_onnx import check_oracles
from tests.ops.helpers import all_oracles, analyse_torch, const, conv, group_of, half, tiny, weight


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    """The node called `name`."""
    return next(n for n in model.graph.node if n.name == name)


def _value(model: onnx.ModelProto, name: str) -> list[int]:
    """An initializer's values as a flat list."""
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).reshape(-1).tolist()


def _pick(op: onnx.NodeProto, inits: list[onnx.TensorProto], width: int) -> Analysis:
    """c1 (8 channels, 'a') -> op (-> 'y', `width` channels) -> c2 -> 'out'."""
    return tiny([conv("x", "w1", "a", "c1"), op, conv("y", "w2", "out", "c2")],
                [weight("w1", 8, 3, 1, 1), weight("w2", 2, width, 1, 1, seed=1), *inits], {"out": ["N", 2, 6, 6]})


@pytest.mark.parametrize("opset", [11, 13])
def test_split_sizes_follow_the_kept_channels(opset: int) -> None:
    """Split [3, 5] on channels: SplitSizes writes the kept count of each part (input from opset 13,
    attribute before)."""
    split = (helper.make_node("Split", ["a", "sp"], ["p", "q"], name="split", axis=1) if opset >= 13 else
             helper.make_node("Split", ["a"], ["p", "q"], name="split", axis=1, split=[3, 5]))  # fmt: skip
    a = tiny([conv("x", "w1", "a", "c1"), split, conv("p", "wp", "op", "cp"), conv("q", "wq", "oq", "cq")],
             [weight("w1", 8, 3, 1, 1), weight("wp", 2, 3, 1, 1, seed=1), weight("wq", 2, 5, 1, 1, seed=2),
              *([const("sp", [3, 5], np.int64)] if opset >= 13 else [])],
             {"op": ["N", 2, 6, 6], "oq": ["N", 2, 6, 6]}, opset=opset)  # fmt: skip
    assert a.hooks == [("split", SplitSizes("a", (3, 5)))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [0, 1, 4, 5, 6]}))
    node = _node(out, "split")
    sizes = _value(out, node.input[1]) if opset >= 13 else next(list(x.ints) for x in node.attribute if x.name == "split")
    assert sizes == [2, 3]


def test_slice_bounds_follow_the_kept_channels() -> None:
    """Slice [2:6] on channels: SliceChannel moves the bounds to the kept channels before each of them."""
    a = _pick(helper.make_node("Slice", ["a", "st", "en", "ax"], ["y"], name="sl"),
                 [const("st", [2], np.int64), const("en", [6], np.int64), const("ax", [1], np.int64)], 4)  # fmt: skip
    assert a.hooks == [("sl", SliceChannel("a", 2, 6, 0))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [0, 1, 3, 5, 7]}))
    node = _node(out, "sl")
    assert (_value(out, node.input[1]), _value(out, node.input[2])) == ([2], [4])


def test_strided_slice_becomes_a_gather_and_leaves_no_unread_constant() -> None:
    """Slice [1::2] on channels has no pruned form: SliceToGather turns it into a Gather of the kept
    positions, and its old bounds do not stay behind in the file."""
    a = _pick(helper.make_node("Slice", ["a", "st", "en", "ax", "sp"], ["y"], name="sl"),
                 [const("st", [1], np.int64), const("en", [8], np.int64), const("ax", [1], np.int64),
                  const("sp", [2], np.int64)], 4)  # fmt: skip
    assert a.hooks == [("sl", SliceToGather("a", (1, 3, 5, 7), 1))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [0, 1, 2, 3, 5]}))
    node = _node(out, "sl")
    assert node.op_type == "Gather" and [(x.name, x.i) for x in node.attribute] == [("axis", 1)]
    assert _value(out, node.input[1]) == [1, 3, 4]
    read = {i for n in out.graph.node for i in n.input}
    assert {t.name for t in out.graph.initializer} <= read


def test_gather_indices_follow_the_kept_channels() -> None:
    """Gather of channels [0, 3, 4, 7]: GatherChannel rewrites the indices to the kept ones' new places."""
    a = _pick(helper.make_node("Gather", ["a", "idx"], ["y"], name="ga", axis=1), [const("idx", [0, 3, 4, 7], np.int64)], 4)
    assert a.hooks == [("ga", GatherChannel("a", (0, 3, 4, 7), "idx"))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [0, 1, 3, 7]}))
    assert _value(out, _node(out, "ga").input[1]) == [0, 2, 3]


def test_concat_on_another_axis_unites_the_inputs() -> None:
    """Concat along H of two 8-channel maps: position c of both is one channel, so c1 and c2 form one group."""
    a = tiny([conv("x", "w1", "a", "c1"), conv("x", "w2", "b", "c2"), helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=2),
              conv("y", "w3", "out", "c3")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 8, 3, 1, 1, seed=1), weight("w3", 4, 8, 1, 1, seed=2)],
             {"out": ["N", 4, 12, 6]})  # fmt: skip
    g = group_of(a, "c1")
    assert g.producers == ["c1", "c2"] and g.size == 8 and g.prunable
    check_plan(a, half(a))


def test_unsqueeze_and_squeeze_shift_the_channel_axis() -> None:
    """Unsqueeze at axis 1 moves the channels to axis 2; Squeeze of it moves them back."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("Unsqueeze", ["a", "one"], ["u"], name="unsq"),
              helper.make_node("Squeeze", ["u", "one"], ["y"], name="sq"), conv("y", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 2, 8, 1, 1, seed=1), const("one", [1], np.int64)],
             {"out": ["N", 2, 6, 6]})  # fmt: skip
    assert (a.channel_axis("u"), a.channel_axis("y")) == (2, 1)
    assert group_of(a, "c1").prunable
    check_plan(a, half(a))


def test_transpose_to_channels_last_feeds_a_linear() -> None:
    """NCHW -> NHWC puts c1's channels on the last axis, where a MatMul by a constant consumes them and
    makes new ones; the inverse Transpose brings those back to axis 1 for c2."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("Transpose", ["a"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
              helper.make_node("MatMul", ["t", "B"], ["m"], name="fc"),
              helper.make_node("Transpose", ["m"], ["y"], name="nchw", perm=[0, 3, 1, 2]), conv("y", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("B", 8, 5, seed=1), weight("w2", 2, 5, 1, 1, seed=2)],
             {"out": ["N", 2, 6, 6]})  # fmt: skip
    assert (a.channel_axis("t"), a.channel_axis("m"), a.channel_axis("y")) == (3, 3, 1)
    assert {(m.tensor, m.axis, m.role) for m in group_of(a, "c1").members} >= {("B", 0, "consumer")}
    assert {(m.tensor, m.axis, m.role) for m in group_of(a, "fc").members} == {("B", 1, "producer"), ("w2", 1, "consumer")}
    check_plan(a, half(a))


def test_concat_offsets(analyses: dict) -> None:
    """The transition conv reads stem (0..7), l1 (8..13) and l2 (14..19) channels from three groups."""
    a = analyses["dense"]
    t = [m for g in a.groups for m in g.members if m.tensor.startswith("t.weight") and m.axis == 1]
    spans = sorted((min(m.positions), max(m.positions)) for m in t)
    assert spans == [(0, 7), (8, 13), (14, 19)]


def test_split_slice_cut(analyses: dict) -> None:
    """Split and Slice on channels cut the transition group: c1 reads 5 of its channels, c2 reads 7."""
    a = analyses["dense"]
    c1 = [m for g in a.groups for m in g.members if m.tensor.startswith("c1.weight") and m.axis == 1]
    c2 = [m for g in a.groups for m in g.members if m.tensor.startswith("c2.weight") and m.axis == 1]
    assert len(c1) == 1 and len(c1[0].channels) == 5 and len(c2[0].channels) == 7
    assert c1[0].channels == (0, 1, 2, 3, 4)


def test_flatten_into_gemm_repeats_channels(analyses: dict) -> None:
    """The Gemm after Flatten holds each channel of the last conv 16 times (4x4 map)."""
    a = analyses["flatten"]
    g = next(g for g in a.groups if g.size == 12)
    gemm = next(m for m in g.members if m.role == "consumer" and m.tensor.startswith("fc1"))
    assert len(gemm.positions) == 12 * 16 and gemm.axis == 1  # transB=1: input features on axis 1
    assert list(gemm.channels[:17]) == [0] * 16 + [1]


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


def test_nhwc_flatten_into_linear(tmp_path: Path) -> None:
    """Flatten of an NHWC map: the Linear reads channel c at features s*C + c (interleaved)."""
    path, a = analyse_torch(NhwcFlatten(), tmp_path, size=8)
    g = next(g for g in a.prunable_groups() if g.size == 6)
    fc = next(m for m in g.members if m.role == "consumer" and m.axis == 1 and len(m.positions) == 96)
    assert list(fc.channels[:7]) == [0, 1, 2, 3, 4, 5, 0]
    all_oracles(path, a)


@pytest.mark.parametrize("mode", ["gather", "stride", "reverse"])
def test_channel_gather_and_strided_slice(tmp_path: Path, mode: str) -> None:
    """Constant-index Gather and strided/reversed Slice on channels keep c1 prunable (indices rewritten)."""
    path, a = analyse_torch(ChannelPick(mode), tmp_path)
    assert any(g.size == 12 for g in a.prunable_groups()), [(g.size, g.frozen_reason) for g in a.groups]
    all_oracles(path, a)
    # a plan that drops some gathered channels and keeps others
    g = next(g for g in a.prunable_groups() if g.size == 12)
    check_oracles(path, Plan(kept={g.id: [1, 2, 3, 5, 8, 11]}))


def test_scalar_channel_index_freezes_that_channel(tmp_path: Path) -> None:
    """x[:, 5] reads one channel by position: its group keeps everything, the reason says why."""
    path, a = analyse_torch(ScalarPick(), tmp_path)
    g = next(g for g in a.groups if g.size == 8)
    assert not g.prunable and "one channel by index" in str(g.frozen_reason)
    check_oracles(path, Plan(kept={}))
