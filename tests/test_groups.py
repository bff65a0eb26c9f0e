"""Channel-dependency groups on exported nets and hand-built graphs (opset 9, unknown ops); per-op cases
live in tests/ops/."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.analysis import analyze
from agmc_onnx.model import from_proto
from agmc_onnx.plan import plan_from_ratios
from tests.conftest import check_plan, helper_model


def _w(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    """A random float initializer."""
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def test_residual_unites_producers(analyses: dict) -> None:
    """The stem and the block's second conv write the same channels: one group with both producers."""
    a = analyses["residual"]
    multi = [g for g in a.groups if len(g.producers) >= 2]
    assert any(len(g.producers) == 2 and g.size == 8 for g in multi)
    assert any(len(g.producers) == 2 and g.size == 16 for g in multi)  # projection shortcut + b2
    assert all(g.prunable for g in multi)


def test_graph_output_frozen(analyses: dict) -> None:
    """The classifier's outputs are frozen, with the reason."""
    a = analyses["residual"]
    last = a.groups[-1]
    assert not last.prunable and "graph output" in (last.frozen_reason or "")


def test_depthwise_and_se_share_group(analyses: dict) -> None:
    """Depthwise copies the expand conv's channels; the SE gate (se2) joins them through the Mul."""
    a = analyses["dwse"]
    g = next(g for g in a.groups if any("expand" in p for p in g.producers))
    assert any("se2" in p for p in g.producers) and g.prunable and g.size == 12
    roles = {(m.tensor.split(".")[0], m.role) for m in g.members}
    assert ("se1", "consumer") in roles and ("dw", "norm") in roles
    prelu = [m for m in g.members if m.role == "norm" and m.node.endswith("PRelu")]
    assert prelu, "PRelu slope must be a norm member"


def test_opset9_sum_unsqueeze_bn_constant_weight() -> None:
    """Opset 9: weights in Constant nodes, BN as Mul/Add by Unsqueeze'd vectors, residual Sum, Flatten->Gemm."""
    c = 8
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32))),
        helper.make_node("Conv", ["x", "w1"], ["y1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Unsqueeze", ["s"], ["s3"], axes=[1, 2]),
        helper.make_node("Unsqueeze", ["b"], ["b3"], axes=[1, 2]),
        helper.make_node("Mul", ["y1", "s3"], ["y2"]),
        helper.make_node("Add", ["y2", "b3"], ["y3"]),
        helper.make_node("Relu", ["y3"], ["y4"]),
        helper.make_node("Conv", ["y4", "w2"], ["y5"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Sum", ["y5", "y4", "y3"], ["y6"]),
        helper.make_node("LRN", ["y6"], ["y7"], size=3),
        helper.make_node("Conv", ["y6", "w3"], ["y8"], name="conv3"),
        helper.make_node("Flatten", ["y8"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["out"], transB=1),
        helper.make_node("Conv", ["y7", "w4"], ["out2"], name="conv4"),
    ]
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "s"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, c).astype(np.float32), "b"),
        _w("w2", c, c, 3, 3, seed=1), _w("w3", 6, c, 1, 1, seed=2), _w("fw", 4, 6 * 16, seed=3),
        _w("fb", 4, seed=4), _w("w4", 2, c, 1, 1, seed=5),
    ]
    model = helper_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["N", 2, 4, 4])], inits, opset=9,
    )  # fmt: skip
    a = analyze(from_proto(model))
    g1 = next(g for g in a.groups if "conv1" in g.producers)
    assert "conv2" in g1.producers
    assert not g1.prunable and "LRN" in (g1.frozen_reason or "")  # LRN mixes neighbouring channels
    g3 = next(g for g in a.groups if "conv3" in g.producers)
    assert g3.prunable
    check_plan(a, plan_from_ratios(a, {g3.id: 0.5}, round_to=1))


def test_unknown_op_freezes_only_what_it_touches() -> None:
    """A custom-domain op on one branch freezes that branch's channels; the other branch stays prunable."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
        helper.make_node("Relu", ["a"], ["a2"]),
        helper.make_node("Conv", ["a2", "w2"], ["b"], name="c2"),
        helper.make_node("Conv", ["a2", "w3"], ["c"], name="c3"),
        helper.make_node("Conv", ["b", "w4"], ["out1"], name="c4"),
        helper.make_node("Softmax", ["c"], ["cs"], axis=1),
        helper.make_node("Conv", ["cs", "w5"], ["out2"], name="c5"),
    ]
    inits = [_w("w1", 8, 3, 1, 1), _w("w2", 6, 8, 1, 1, seed=1), _w("w3", 6, 8, 1, 1, seed=2), _w("w4", 2, 6, 1, 1, seed=3),
             _w("w5", 2, 6, 1, 1, seed=4)]
    model = helper_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out1", TensorProto.FLOAT, ["N", 2, 4, 4]),
         helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["N", 2, 4, 4])], inits,
    )  # fmt: skip
    a = analyze(from_proto(model))
    by = {g.producers[0]: g for g in a.groups}
    assert by["c1"].prunable and by["c2"].prunable
    assert not by["c3"].prunable and "Softmax" in (by["c3"].frozen_reason or "")
    assert any("Softmax" in r for _, r in a.frozen)
    check_plan(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))


def test_custom_domain_op_never_crashes() -> None:
    """An op from an unknown domain is frozen with its name, not an error."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
        helper.make_node("Weird", ["a"], ["b"], domain="com.example", name="weird"),
        helper.make_node("Conv", ["a", "w2"], ["out"], name="c2"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 4, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, None)], [_w("w1", 8, 3, 1, 1), _w("w2", 2, 8, 1, 1)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    a = analyze(from_proto(model, normalise_graph=False))
    g = a.groups[0]
    assert not g.prunable and "Weird" in (g.frozen_reason or "")


def test_an_unknown_width_freezes_what_follows_and_says_where() -> None:
    """A custom op that neither ONNX inference nor ONNX Runtime can give a shape: its output's width is
    unknown, so what reads it is frozen naming it, never dropped silently (it was '0/0 groups', no reason)."""
    from agmc_onnx.workflows.audit import summarize

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
        helper.make_node("Weird", ["a"], ["b"], domain="com.example", name="weird"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="c2"),
        helper.make_node("Relu", ["c"], ["out"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [_w("w1", 8, 3, 1, 1), _w("w2", 2, 8, 1, 1)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    a = analyze(from_proto(model, normalise_graph=False))
    reasons = dict(a.frozen)
    assert "Weird weird" in reasons["weird"]
    assert "not tracked" in reasons["c2"] and "weird" in reasons["c2"] and "'b'" in reasons["c2"]
    info = summarize(a)
    assert info["prunable_groups"] == 0 and info["why_nothing_prunable"] and "Weird" in info["why_nothing_prunable"]


def test_identity_shared_weight_and_constant_of_shape() -> None:
    """Identity-shared initializers become per-layer copies; ConstantOfShape weights are folded."""
    nodes = [
        helper.make_node("Identity", ["w"], ["w_a"]),
        helper.make_node("Identity", ["w"], ["w_b"]),
        helper.make_node("Conv", ["x", "w_a"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a2"]),
        helper.make_node("ConstantOfShape", ["bshape"], ["bias"], value=numpy_helper.from_array(np.array([0.1], np.float32))),
        helper.make_node("Conv", ["a2", "w_b", "bias"], ["b"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w3"], ["out"], name="c3"),
    ]
    inits = [_w("w", 4, 4, 3, 3), _w("w3", 2, 4, 1, 1), numpy_helper.from_array(np.array([4], np.int64), "bshape")]
    model = helper_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 5, 5])], inits,
    )  # fmt: skip
    a = analyze(from_proto(model))
    assert len(a.prunable_groups()) == 2
    check_plan(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))


def test_groups_topological_and_numbered(analyses: dict) -> None:
    """Group ids are 0..n-1 in topological order of the first producer; channels 0..size-1 all used."""
    a = analyses["dense"]
    order = {n.name: i for i, n in enumerate(a.model.nodes)}
    firsts = [order[g.producers[0]] for g in a.groups]
    assert firsts == sorted(firsts) and [g.id for g in a.groups] == list(range(len(a.groups)))
    for g in a.groups:
        seen = {c for m in g.members for c in m.channels}
        assert seen <= set(range(g.size))
