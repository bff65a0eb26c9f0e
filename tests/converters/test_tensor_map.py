"""converters.tensor_map: each ONNX initializer found in the converted module, live, transposed where onnx2torch
transposes it, and refused when its value is ambiguous."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from converters import to_torch
from converters.tensor_map import map_initializers, node_modules, own_matches, sanitize


def _model(same_weights: bool = False) -> onnx.ModelProto:
    """Conv -> BN -> Relu -> Conv -> Flatten -> Gemm(transB=0), node names with '.', '/' and ':' in them."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 4, 3, 3))
    arrays = {"w1": w1, "w2": w1.copy() if same_weights else rng.standard_normal((4, 4, 3, 3)),
              "B": rng.standard_normal((64, 5)), "C": rng.standard_normal(5), "s": 1 + rng.random(4),
              "b": rng.random(4), "m": rng.random(4), "v": 1 + rng.random(4)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="block.0/conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["n"], name="block.0/bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["c"], name="block.1:conv", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "B", "C"], ["y"], name="head", transB=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(a.astype(np.float32), k) for k, a in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers by name as numpy arrays."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_map_initializers_finds_the_live_tensors() -> None:
    proto = _model()
    module = to_torch(proto, trainable=False)
    inits = _inits(proto)
    targets = map_initializers(module, inits, {"w1", "w2", "B", "C"})
    assert {k: t.transposed for k, t in targets.items()} == {"w1": False, "w2": False, "B": True, "C": False}
    for name, t in targets.items():
        np.testing.assert_array_equal(t.tensor.detach().numpy(), inits[name].T if t.transposed else inits[name])
        assert t.original is not t.tensor and torch.equal(t.original, t.tensor)  # a copy to restore from
    x = torch.as_tensor(np.random.default_rng(1).standard_normal((2, 4, 4, 4)).astype(np.float32))
    with torch.no_grad():
        targets["w2"].tensor.zero_()  # the module computes with the mapped tensor: only Gemm's bias is left
        out = module(x)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(inits["C"], (2, 5)), rtol=0, atol=1e-6)


def test_map_initializers_refuses_an_ambiguous_initializer() -> None:
    proto = _model(same_weights=True)
    with pytest.raises(LookupError, match="'w1' matches 2 tensors"):
        map_initializers(to_torch(proto, trainable=False), _inits(proto), {"w1"})


def test_node_modules_own_matches_and_slots() -> None:
    proto = _model()
    module = to_torch(proto, trainable=False)
    inits = _inits(proto)
    assert sanitize("block.1:conv") == "block/1/conv" and sanitize("./a..b/") == "a/b"
    by_node = node_modules(module)
    assert {"block/0/conv", "block/0/bn", "block/1/conv", "head"} <= set(by_node)
    (slot, t, transposed), = own_matches(by_node["head"], inits["B"])
    assert (slot.kind, slot.name, transposed) == ("param", "weight", True) and t is by_node["head"].weight
    (slot, _, transposed), = own_matches(by_node["block/0/bn"], inits["m"])
    assert (slot.kind, slot.name, transposed) == ("buffer", "running_mean", False)
    assert own_matches(by_node["block/1/conv"], inits["w1"]) == []  # w1 belongs to the other conv
    (conv_slot, weight, _), = own_matches(by_node["block/1/conv"], inits["w2"])
    conv_slot.set(weight[:2].clone())  # a sliced copy replaces the parameter, frozen
    new = by_node["block/1/conv"].weight
    assert isinstance(new, torch.nn.Parameter) and not new.requires_grad and new.shape == (2, 4, 3, 3)
    slot.set(torch.zeros(4))
    assert torch.equal(by_node["block/0/bn"].running_mean, torch.zeros(4))
