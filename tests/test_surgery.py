"""Surgery oracles: keep-all is the original, prune equals mask, the output is valid and keeps its header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.analysis import analyze
from agmc_onnx.errors import InputError
from agmc_onnx.model import from_proto, load
from agmc_onnx.plan import Plan, full_plan, plan_from_ratios
from agmc_onnx.surgery import mask, prune
from tests.conftest import NETS, check_plan, feeds, max_diff, random_plan, run

ALL = [n for n in NETS] + [f"{n}.folded" for n in NETS]


@pytest.mark.parametrize("name", ALL)
def test_keep_all_is_the_original(analyses: dict, nets: dict, name: str) -> None:
    """Oracle 1: a full plan reproduces the original file's outputs."""
    a = analyses[name]
    original = onnx.load(str(nets[name]))
    x = feeds(original)
    assert max_diff(run(prune(a, full_plan(a)), x), run(original, x)) <= 1e-5


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_equals_mask(analyses: dict, name: str, seed: int) -> None:
    """Oracle 2 and 3 on random subsets of every prunable group."""
    a = analyses[name]
    if not a.prunable_groups():
        pytest.fail(f"{name} has no prunable group")
    check_plan(a, random_plan(a, seed))


@pytest.mark.parametrize("name", ["residual", "dwse", "dense", "flatten"])
def test_mask_changes_outputs(analyses: dict, name: str) -> None:
    """The mask oracle has teeth: removing channels changes the outputs."""
    a = analyses[name]
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)
    x = feeds(a.model.proto)
    assert max_diff(run(mask(a, plan), x), run(a.model.proto, x)) > 1e-3


def test_wrong_surgery_would_be_caught(analyses: dict) -> None:
    """Pruning one channel but masking another gives different outputs (the oracle detects mistakes)."""
    a = analyses["residual"]
    g = a.prunable_groups()[0]
    keep = list(range(g.size))
    plan_a = Plan({g.id: keep[1:]})
    plan_b = Plan({g.id: keep[:-1]})
    x = feeds(a.model.proto)
    assert max_diff(run(prune(a, plan_a), x), run(mask(a, plan_b), x)) > 1e-4


def test_header_and_interface_kept(analyses: dict, nets: dict) -> None:
    """Input/output names, dynamic batch, opset, IR version and metadata survive surgery."""
    a = analyses["residual"]
    src = onnx.load(str(nets["residual"]))
    a.model.proto.metadata_props.add(key="owner", value="test")
    try:
        out = prune(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=2))
    finally:
        del a.model.proto.metadata_props[:]
    assert [i.name for i in out.graph.input] == [i.name for i in src.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in src.graph.output]
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.opset_import == src.opset_import and out.ir_version == src.ir_version
    assert {p.key: p.value for p in out.metadata_props} == {"owner": "test"}
    x = feeds(out, batch=5)
    assert run(out, x)[0].shape == (5, 5)


def test_invalid_plans_rejected(analyses: dict) -> None:
    """Empty groups, bad indices, frozen groups and unknown ids are refused before any surgery."""
    a = analyses["residual"]
    g = a.prunable_groups()[0]
    frozen = next(x for x in a.groups if not x.prunable)
    for plan in (Plan({g.id: []}), Plan({g.id: [0, g.size]}), Plan({frozen.id: [0]}), Plan({999: [0]})):
        with pytest.raises(InputError):
            prune(a, plan)


def test_masked_channels_really_unused(analyses: dict) -> None:
    """In the masked model, perturbing a removed producer's weights does not change the outputs."""
    a = analyses["residual"]
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)
    m = mask(a, plan)
    g = a.prunable_groups()[1]
    removed = sorted(set(range(g.size)) - set(plan.kept[g.id]))
    producer = next(mb for mb in g.members if mb.role == "producer" and mb.axis == 0)
    inits = {t.name: t for t in m.graph.initializer}
    arr = onnx.numpy_helper.to_array(inits[producer.tensor]).copy()
    for pos, ch in zip(producer.positions, producer.channels, strict=True):
        if ch in removed:
            arr[pos] += 3.0
    x = feeds(m)
    before = run(m, x)
    inits[producer.tensor].CopyFrom(onnx.numpy_helper.from_array(arr, producer.tensor))
    assert max_diff(run(m, x), before) <= 1e-5
    assert np.isfinite(before[0]).all()


def test_node_order_and_names_kept(analyses: dict) -> None:
    """The pruned graph lists the analysed graph's nodes in the same order under the same names (BN
    re-calibration pairs BN nodes with converted BN modules by order): graphsurgeon's toposort keeps it."""
    for name in ("residual", "dense", "dwse", "shuffle"):
        a = analyses[name]
        out = prune(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))
        assert [(n.name, n.op_type) for n in out.graph.node] == [(n.name, n.op_type) for n in a.model.nodes]


def test_surgery_keeps_what_graphsurgeon_does_not_carry() -> None:
    """On a graph not normalised at load: an empty-list attribute (gs's exporter cannot type it), an
    attribute type gs's importer drops (TENSORS), node doc strings and metadata all survive prune."""
    rng = np.random.default_rng(0)
    c1 = helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", doc_string="first conv")
    c1.metadata_props.add(key="origin", value="test")
    mean = helper.make_node("ReduceMean", ["out"], ["pooled"], name="mean", keepdims=1)
    mean.attribute.append(helper.make_attribute("axes", [], attr_type=onnx.AttributeProto.INTS))
    weird = helper.make_node("Weird", ["x"], ["side"], domain="com.example", name="weird")
    weird.attribute.append(helper.make_attribute("tables", [numpy_helper.from_array(np.ones(2, np.float32))]))
    nodes = [c1, helper.make_node("Relu", ["a"], ["a2"], name="r"), helper.make_node("Conv", ["a2", "w2"], ["out"], name="c2"),
             mean, weird]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (8, 3, 1, 1)), ("w2", (2, 8, 1, 1)))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 1, 1, 1]),
         helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", 3, 4, 4])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    a = analyze(from_proto(model, normalise_graph=False))
    assert [g.size for g in a.prunable_groups()] == [8]
    out = prune(a, plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1))
    by = {n.name: n for n in out.graph.node}
    assert list(next(t for t in out.graph.initializer if t.name == "w1").dims) == [4, 3, 1, 1]
    axes = next(x for x in by["mean"].attribute if x.name == "axes")
    assert axes.type == onnx.AttributeProto.INTS and list(axes.ints) == []
    tables = next(x for x in by["weird"].attribute if x.name == "tables")
    assert tables.type == onnx.AttributeProto.TENSORS and len(tables.tensors) == 1
    assert by["c1"].doc_string == "first conv"
    assert {(p.key, p.value) for p in by["c1"].metadata_props} == {("origin", "test")}


def test_a_stale_declared_output_shape_is_corrected_in_the_written_file(tmp_path: Path) -> None:
    """An old converter declared the output [1, 10, 1, 1] while the graph computes [1, 10]: the original fails
    the full checker; the written file declares what it computes (same name and type) and passes."""
    from fixtures.wild_graphs import inception_zoo

    path = inception_zoo("bad_output_shape")(tmp_path)
    a = analyze(load(path))
    for plan in (full_plan(a), plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)):
        out = prune(a, plan)
        onnx.checker.check_model(out, full_check=True)
        dims = [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim]
        assert out.graph.output[0].name == a.model.output_names[0] and dims == [1, 10]
