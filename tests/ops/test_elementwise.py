"""Element-wise rule (agmc_onnx/ops/elementwise.py): residual unions, per-channel constants, broadcasts."""

from __future__ import annotations

from onnx import helper

from tests.conftest import check_plan
from tests.ops.helpers import const, conv, group_of, half, tiny, weight


def test_residual_add_unites_both_producers() -> None:
    """c2(relu(c1(x))) + relu(c1(x)): c1 and c2 write the same channels, one prunable group of 8."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("Relu", ["a"], ["r"], name="relu"), conv("r", "w2", "b", "c2"),
              helper.make_node("Add", ["b", "r"], ["s"], name="add"), conv("s", "w3", "out", "c3")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 8, 8, 1, 1, seed=1), weight("w3", 4, 8, 1, 1, seed=2)],
             {"out": ["N", 4, 6, 6]})  # fmt: skip
    g = group_of(a, "c1")
    assert g.producers == ["c1", "c2"] and g.size == 8 and g.prunable
    check_plan(a, half(a))


def test_per_channel_constants_are_norm_members() -> None:
    """A [1, C, 1, 1] scale and a [C, 1, 1] shift (broadcast from the right) hold the channels on the axis
    that lines up with the channel axis."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("Mul", ["a", "scale"], ["m"], name="mul"),
              helper.make_node("Add", ["m", "shift"], ["s"], name="add"), conv("s", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("scale", 1, 8, 1, 1, seed=1), weight("shift", 8, 1, 1, seed=2),
              weight("w2", 4, 8, 1, 1, seed=3)], {"out": ["N", 4, 6, 6]})  # fmt: skip
    norms = {(m.tensor, m.axis) for m in group_of(a, "c1").members if m.role == "norm"}
    assert norms == {("scale", 1), ("shift", 0)}
    check_plan(a, half(a))


def test_broadcast_that_creates_channels_keeps_them_out_of_groups() -> None:
    """A 1-channel map plus a [1, 4, 1, 1] constant makes 4 channels no layer produced: they belong to no
    group (so nothing can prune them), and the conv before stays prunable."""
    a = tiny([conv("x", "w0", "h", "c0"), helper.make_node("Relu", ["h"], ["hr"], name="relu"), conv("hr", "w1", "a", "c1"),
              helper.make_node("Add", ["a", "bias"], ["s"], name="add"), conv("s", "w2", "out", "c2")],
             [weight("w0", 8, 3, 1, 1), weight("w1", 1, 8, 1, 1, seed=1), const("bias", [[[[0.1]], [[0.2]], [[0.3]], [[0.4]]]]),
              weight("w2", 2, 4, 1, 1, seed=2)], {"out": ["N", 2, 6, 6]})  # fmt: skip
    assert a.tensor_channels("s") == [None] * 4
    assert group_of(a, "c0").prunable
    check_plan(a, half(a))
