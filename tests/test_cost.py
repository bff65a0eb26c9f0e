"""Cost model: predicted MACs/params equal what the written file counts; calls are cheap."""

from __future__ import annotations

import time

import pytest

from agmc_onnx.cost import count_macs, count_params
from agmc_onnx.plan import plan_from_ratios
from agmc_onnx.surgery import prune
from tests.conftest import NETS, random_plan


@pytest.mark.parametrize("name", list(NETS))
def test_totals_match_counted(analyses: dict, name: str) -> None:
    """Original totals equal the independent count of the analysed graph."""
    a = analyses[name]
    assert a.cost.total_macs == count_macs(a.model.proto) > 0
    assert a.cost.total_params == count_params(a.model.proto)


@pytest.mark.parametrize("name", list(NETS))
def test_prediction_equals_written_file(analyses: dict, name: str) -> None:
    """Oracle 3: predicted MACs and params (from counts and from the plan) equal the pruned file's."""
    a = analyses[name]
    for seed in range(3):
        plan = random_plan(a, seed)
        out = prune(a, plan)
        assert a.cost.plan_macs(plan) == count_macs(out)
        assert a.cost.plan_params(plan) == count_params(out)
        if a.cost.counts_exact:
            assert a.cost.macs(plan.keep_counts()) == count_macs(out)
            assert a.cost.params(plan.keep_counts()) == count_params(out)


def test_fewer_channels_fewer_macs(analyses: dict) -> None:
    """MACs drop monotonically with the keep ratio, and every prunable group matters."""
    a = analyses["residual"]
    prev = a.cost.total_macs
    for r in (0.9, 0.7, 0.5, 0.3):
        plan = plan_from_ratios(a, {g.id: r for g in a.prunable_groups()}, round_to=1)
        now = a.cost.plan_macs(plan)
        assert now <= prev
        prev = now
    for g in a.prunable_groups():
        assert a.cost.macs({g.id: 1}) < a.cost.total_macs


def test_macs_call_is_cheap(analyses: dict) -> None:
    """The search calls macs() at every step: thousands of calls per second on a small net."""
    a = analyses["dense"]
    keep = {g.id: max(1, g.size // 2) for g in a.prunable_groups()}
    t = time.perf_counter()
    for _ in range(2000):
        a.cost.macs(keep)
    assert time.perf_counter() - t < 2.0


def test_count_macs_at_the_analysis_size_of_a_dynamic_file() -> None:
    """A file with dynamic sizes is counted at the given size (the shape subgraphs folded there); without one
    it is refused (it used to be counted at 1x1)."""
    from onnx import TensorProto, helper

    from agmc_onnx.errors import InputError
    from tests.conftest import helper_model
    from tests.helpers_onnx import reference_macs
    from tests.ops.helpers import runtime_reshape_head

    nodes, inits = runtime_reshape_head()
    model = helper_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                         [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], inits)  # fmt: skip
    for size in ((1, 3, 8, 8), (1, 3, 12, 20)):
        assert count_macs(model, {"x": size}) == reference_macs(model, {"x": size}) == size[2] * size[3] * 8 * 27 + 32
    with pytest.raises(InputError, match="--input-shape"):
        count_macs(model)


def test_count_params_reads_constant_nodes_and_bodies() -> None:
    """Weights in Constant nodes (Paddle) and in Loop/If bodies are params; non-float constants are not."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    branch = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                               [numpy_helper.from_array(np.ones(5, np.float32), "s")])  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((3, 4), np.float32))),
         helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones(7, np.int64))),
         helper.make_node("Constant", [], ["f"], value_floats=[1.0, 2.0]),
         helper.make_node("If", ["c"], ["o"], then_branch=branch, else_branch=branch)],
        "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(6, np.float32), "x")],
    )  # fmt: skip
    assert count_params(helper.make_model(graph)) == 12 + 2 + 6 + 5 + 5
