"""Shapes at a fixed input size (agmc_onnx/shapes.py): inference, shape subgraphs folded, ONNX Runtime last."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from agmc_onnx.inputs import with_input_dims
from agmc_onnx.model import from_proto, load
from agmc_onnx.shapes import shape_views, shapes_of, static_shapes
from fixtures.wild_graphs import control_flow
from tests.conftest import helper_model
from tests.ops.helpers import runtime_reshape_head, weight


def _head() -> onnx.ModelProto:
    """The run-time Reshape head on x[N, 3, H, W]."""
    nodes, inits = runtime_reshape_head()
    return helper_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], inits)  # fmt: skip


def test_plain_inference_leaves_the_runtime_reshape_unknown() -> None:
    """What this module is for: ONNX's own inference gives the Reshape's output no usable shape."""
    model = _head()
    inferred = onnx.shape_inference.infer_shapes(with_input_dims(model, {"x": ("N", 3, 8, 8)}), data_prop=True)
    got = shapes_of(inferred)
    assert got.get("f") is None or any(not isinstance(d, int) for d in got["f"][1:])


def test_static_shapes_fold_the_shape_subgraph() -> None:
    """With the inputs fixed, Shape(r) is a constant: folding it gives the Reshape's output shape."""
    got = static_shapes(_head(), {"x": [1, 3, 8, 8]})
    assert got["f"] == [1, 8, 64] and got["m"] == [1, 8] and got["out"] == [1, 4]
    assert static_shapes(_head(), {"x": [2, 3, 4, 6]})["f"] == [2, 8, 24]


def test_shape_views_keep_the_batch_symbolic_for_rules() -> None:
    """Rules read the batch as a symbol (a Reshape that mixes it in stays visible); costs read batch 1."""
    model = _head()
    views = shape_views(model, {"x": ("N", 3, 8, 8)})
    assert views.view["f"] == ["N", 8, 64] and "f" in views.filled
    assert views.static is not None and views.static["f"] == [1, 8, 64]


def test_static_file_reuses_its_inferred_shapes() -> None:
    """A file whose inference is complete at its own size needs no folding and no run."""
    m = from_proto(_static_conv())
    assert m.filled_shapes == [] and m.shape("y") == ["N", 4, 8, 8]


def _static_conv() -> onnx.ModelProto:
    """x[N, 3, 8, 8] -> Conv -> y."""
    return helper_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                        [weight("w", 4, 3, 1, 1)])  # fmt: skip


def test_loop_output_shape_comes_from_a_run(tmp_path: Path) -> None:
    """ONNX infers no shape for a Loop's carried output; one ONNX Runtime run at the fixed size does, so the
    conv after the Loop has its output shape (its MACs were counted as 1x1 before)."""
    path = control_flow("loop", "between")(tmp_path)
    m = load(path)
    loop = next(n for n in m.nodes if n.op_type == "Loop")
    conv = next(n for n in m.nodes if n.op_type == "Conv" and n.input[0] == loop.output[0])
    assert m.shape(loop.output[0]) == ["N", 8, 16, 16]
    assert m.static_shape(conv.output[0]) == [1, 16, 16, 16]
