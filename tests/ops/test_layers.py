"""Layer rules (agmc_onnx/ops/layers.py): Conv, ConvTranspose, Gemm, MatMul, the norms, and DepthwiseGroups."""

from __future__ import annotations

import onnx
from onnx import helper

from agmc_onnx.analysis import Analysis
from agmc_onnx.ops.layers import DepthwiseGroups
from agmc_onnx.plan import Plan, plan_from_ratios
from agmc_onnx.surgery import prune
from tests.conftest import check_plan
from tests.ops.helpers import conv, group_of, half, positive, tiny, weight


def _roles(a: Analysis, producer: str) -> set[tuple[str, int, str]]:
    """(tensor, axis, role) of every member of the group that `producer` writes."""
    return {(m.tensor, m.axis, m.role) for m in group_of(a, producer).members}


def test_conv_creates_channels_next_conv_consumes_them() -> None:
    """Conv: weight axis 0 and bias produce, the next conv's weight axis 1 consumes; the last conv's
    channels reach the graph output and stay."""
    a = tiny([helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="c1", pads=[1] * 4, kernel_shape=[3, 3]),
              helper.make_node("Relu", ["c"], ["r"], name="relu"), conv("r", "w2", "out", "c2")],
             [weight("w1", 8, 3, 3, 3), weight("b1", 8, seed=1), weight("w2", 4, 8, 1, 1, seed=2)],
             {"out": ["N", 4, 6, 6]})  # fmt: skip
    g = group_of(a, "c1")
    assert g.prunable and g.size == 8 and not a.hooks
    assert _roles(a, "c1") == {("w1", 0, "producer"), ("b1", 0, "producer"), ("w2", 1, "consumer")}
    assert not group_of(a, "c2").prunable
    check_plan(a, half(a))


def test_depthwise_conv_copies_ids_and_rewrites_group() -> None:
    """Depthwise: output ids are the input ids (weight axis 0 is a norm member) and the DepthwiseGroups
    record sets `group` to the kept width at surgery."""
    a = tiny([conv("x", "w1", "a", "c1"), conv("a", "wd", "d", "dw", group=6, pads=[1] * 4, kernel_shape=[3, 3]),
              conv("d", "w2", "out", "c2")],
             [weight("w1", 6, 3, 1, 1), weight("wd", 6, 1, 3, 3, seed=1), weight("w2", 4, 6, 1, 1, seed=2)],
             {"out": ["N", 4, 6, 6]})  # fmt: skip
    assert a.hooks == [("dw", DepthwiseGroups("a", 1))]
    assert ("wd", 0, "norm") in _roles(a, "c1") and "dw" not in {p for g in a.groups for p in g.producers}
    g = group_of(a, "c1")
    out = check_plan(a, Plan({g.id: [0, 3]}))
    dw = next(n for n in out.graph.node if n.name == "dw")
    assert next(x.i for x in dw.attribute if x.name == "group") == 2


def test_conv_transpose_swaps_weight_axes() -> None:
    """ConvTranspose weight [C_in, C_out/g, k, k]: axis 0 consumes, axis 1 produces."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("ConvTranspose", ["a", "wt"], ["t"], name="ct", strides=[2, 2],
                                                           kernel_shape=[2, 2]),
              conv("t", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("wt", 8, 5, 2, 2, seed=1), weight("w2", 4, 5, 1, 1, seed=2)],
             {"out": ["N", 4, 12, 12]})  # fmt: skip
    assert ("wt", 0, "consumer") in _roles(a, "c1")
    assert {("wt", 1, "producer"), ("w2", 1, "consumer")} <= _roles(a, "ct")
    check_plan(a, half(a))


def test_gemm_trans_b_picks_the_feature_axis() -> None:
    """Gemm B [K, N] (transB=0) consumes on axis 0, B [N, K] (transB=1) on axis 1; C is a producer."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
              helper.make_node("Gemm", ["f", "B1", "C1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["hr"], name="r"),
              helper.make_node("Gemm", ["hr", "B2"], ["out"], name="fc2", transB=1)],
             [weight("w1", 8, 3, 1, 1), weight("B1", 8, 10, seed=1), weight("C1", 10, seed=2), weight("B2", 4, 10, seed=3)],
             {"out": ["N", 4]})  # fmt: skip
    assert ("B1", 0, "consumer") in _roles(a, "c1")
    assert _roles(a, "fc1") == {("B1", 1, "producer"), ("C1", 0, "producer"), ("B2", 1, "consumer")}
    check_plan(a, half(a))


def test_matmul_of_two_activations_per_channel_or_frozen() -> None:
    """MatMul of two activations whose channels sit on a batch axis of both is a product per channel (like per
    head): prunable, oracles hold; one that sums channels against other dims freezes, with the reason."""
    a = tiny([conv("x", "w1", "a", "c1"), helper.make_node("MatMul", ["a", "a"], ["m"], name="mm"), conv("m", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 4, 8, 1, 1, seed=1)], {"out": ["N", 4, 6, 6]})  # fmt: skip
    assert group_of(a, "c1").prunable
    check_plan(a, half(a))
    t = helper.make_node("Transpose", ["a"], ["t"], name="t", perm=[0, 2, 3, 1])  # channels on the K axis
    b = tiny([conv("x", "w1", "a", "c1"), t, helper.make_node("MatMul", ["t", "x"], ["out"], name="mm")],
             [weight("w1", 6, 1, 1, 1)], {"out": ["N", 6, 6, 6]}, x=("N", 1, 6, 6))  # fmt: skip
    g = group_of(b, "c1")
    assert not g.prunable and "product" in str(g.frozen_reason)


def test_batchnorm_parameters_are_norm_members() -> None:
    """BN's scale, bias, mean and var hold the channels of its input on axis 0."""
    bn = helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["n"], name="bn")
    a = tiny([conv("x", "w1", "a", "c1"), bn, conv("n", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("s", 8, seed=1), weight("b", 8, seed=2), weight("m", 8, seed=3),
              positive("v", 8), weight("w2", 4, 8, 1, 1, seed=5)], {"out": ["N", 4, 6, 6]})  # fmt: skip
    assert {(t, 0, "norm") for t in "sbmv"} <= _roles(a, "c1")
    check_plan(a, half(a))


def test_layernorm_over_channels_freezes_over_width_passes() -> None:
    """LayerNormalization from axis 1 normalises over the channels (frozen); from the last axis it does not."""
    def net(axis: int, scale: tuple[int, ...]) -> Analysis:
        """c1 -> LayerNormalization(axis) -> c2."""
        ln = helper.make_node("LayerNormalization", ["a", "g"], ["n"], name="ln", axis=axis)
        return tiny([conv("x", "w1", "a", "c1"), ln, conv("n", "w2", "out", "c2")],
                    [weight("w1", 8, 3, 1, 1), positive("g", *scale), weight("w2", 4, 8, 1, 1, seed=1)],
                    {"out": ["N", 4, 6, 6]}, opset=17)  # fmt: skip

    over_c = group_of(net(1, (8, 6, 6)), "c1")
    assert not over_c.prunable and "normalises over the channel axis" in str(over_c.frozen_reason)
    a = net(-1, (6,))
    assert group_of(a, "c1").prunable
    check_plan(a, half(a))


def test_depthwise_group_attribute_rewritten(analyses: dict) -> None:
    """Depthwise convs get `group` = kept channels; the multiplier-2 depthwise keeps 2 outputs per input."""
    a = analyses["dwse"]
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)
    out = prune(a, plan)
    groups = {n.name: onnx.helper.get_attribute_value(next(x for x in n.attribute if x.name == "group"))
              for n in out.graph.node if n.op_type == "Conv" and any(x.name == "group" for x in n.attribute)}
    assert sorted(groups.values())[-2:] == [6, 6]
    w = {t.name: t for t in out.graph.initializer}
    dw2 = next(n for n in out.graph.node if n.op_type == "Conv" and n.input[1].startswith("dw2"))
    assert list(w[dw2.input[1]].dims[:2]) == [12, 1]


def test_grouped_conv_keeps_equal_groups(analyses: dict) -> None:
    """Grouped conv: group attribute unchanged, every conv group keeps the same number of channels."""
    a = analyses["grouped"]
    check_plan(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))
    out = prune(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))
    conv = next(n for n in out.graph.node if n.op_type == "Conv" and any(x.name == "group" and x.i == 4 for x in n.attribute))
    w = next(t for t in out.graph.initializer if t.name == conv.input[1])
    assert w.dims[0] % 4 == 0
