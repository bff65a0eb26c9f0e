"""agmc_onnx/shapefold.py: run-time Reshape targets and Expand shapes whose only unknown is the batch become
constants (a -1 for the batch), so the op rules can follow channels through them; nothing else changes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.shapefold import fold_shape_targets
from tests.helpers_onnx import run


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    """An int64 initializer."""
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _model(x_dims: list, heads_into_batch: bool = False) -> onnx.ModelProto:
    """x[B, 8, 6] -> Reshape(Concat(B, 8, 2, 3)) [or (B*2, 8, 3)] -> Relu; plus Expand(c[1, 1, 6], (B, 1, 1)) added
    back to x: both shapes are computed from Shape(x) at run time, as opset-17 exports write them."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "zero"], ["b"], name="batch", axis=0),  # a scalar: the batch
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"], name="unsq"),
    ]
    if heads_into_batch:
        nodes += [helper.make_node("Mul", ["b1", "two"], ["bh"], name="times_heads"),
                  helper.make_node("Concat", ["bh", "rest2"], ["target"], name="target", axis=0)]
    else:
        nodes.append(helper.make_node("Concat", ["b1", "rest"], ["target"], name="target", axis=0))
    nodes += [
        helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
        helper.make_node("Relu", ["r"], ["y"], name="relu"),
        helper.make_node("Concat", ["b1", "ones"], ["eshape"], name="eshape", axis=0),
        helper.make_node("Expand", ["tok", "eshape"], ["e"], name="expand"),
        helper.make_node("Add", ["x", "e"], ["z"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"), _i64("ax0", [0]), _i64("rest", [8, 2, 3]),
             _i64("rest2", [8, 3]), _i64("two", [2]), _i64("ones", [1, 1]),
             numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(1, 1, 6), "tok")]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8, 3] if heads_into_batch else ["B", 8, 2, 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, x_dims)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(batch: int, dims: tuple[int, ...] = (8, 6)) -> dict[str, np.ndarray]:
    """A seeded input batch."""
    return {"x": np.random.default_rng(batch).standard_normal((batch, *dims)).astype(np.float32)}


def test_batch_targets_become_constants() -> None:
    """Concat(Shape(x)[0], 8, 2, 3) becomes the constant (-1, 8, 2, 3); the Expand keeps the batch read at run
    time and its other entries constant; outputs unchanged at any batch size; the shape nodes are gone."""
    model = _model(["B", 8, 6])
    before = model.SerializeToString()
    folded = fold_shape_targets(model)
    assert model.SerializeToString() == before  # the input is left as it was
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    reshape = next(n for n in folded.graph.node if n.op_type == "Reshape")
    assert inits[reshape.input[1]].tolist() == [-1, 8, 2, 3]
    expand = next(n for n in folded.graph.node if n.op_type == "Expand")
    concat = next(n for n in folded.graph.node if n.output[0] == expand.input[1])
    assert [inits[i].tolist() for i in concat.input if i in inits] == [[1, 1]]
    assert not any(n.name in ("target", "unsq") for n in folded.graph.node)
    onnx.checker.check_model(folded, full_check=True)
    for batch in (1, 3):
        for got, want in zip(run(folded, _feeds(batch)), run(model, _feeds(batch)), strict=True):
            np.testing.assert_array_equal(got, want)


def test_heads_times_batch_is_the_minus_one() -> None:
    """A target entry that is the batch times the head count (torch's MultiheadAttention) becomes -1."""
    model = _model(["B", 8, 6], heads_into_batch=True)
    folded = fold_shape_targets(model)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    reshape = next(n for n in folded.graph.node if n.op_type == "Reshape")
    assert inits[reshape.input[1]].tolist() == [-1, 8, 3]
    np.testing.assert_array_equal(run(folded, _feeds(2))[0], run(model, _feeds(2))[0])


def test_other_run_time_dims_are_left_alone() -> None:
    """With another run-time dim than the batch (a dynamic size) nothing is folded: the model is returned as is."""
    model = _model(["B", 8, "W"])
    assert fold_shape_targets(model) is model
    static = _model([2, 8, 6])  # a static batch: every target is a constant
    folded = fold_shape_targets(static)
    reshape = next(n for n in folded.graph.node if n.op_type == "Reshape")
    assert {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}[reshape.input[1]].tolist() == [2, 8, 2, 3]
