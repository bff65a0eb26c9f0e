"""ONNX -> torch -> ONNX round trips on the fixture nets, BN kept, names and dynamic batch kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.runtime import session
from converters import ConversionError, to_onnx, to_torch, unsupported_nodes
from fixtures import engine_nets


def _run(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    """Run the model's first output in ONNX Runtime (CPU)."""
    sess = session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    """Op types of the graph's nodes, in order."""
    return [n.op_type for n in model.graph.node]


# resnet56 repeats resnet20's structure, and BN-folded copies of the bigger nets add no new op: slow.
_SLOW = {("resnet56", "bn"), ("resnet56", "folded"), ("densenet", "folded"), ("mobilenetv2", "folded")}
_CASES = [
    pytest.param(n, v, marks=pytest.mark.slow) if (n, v) in _SLOW else (n, v)
    for n in sorted(engine_nets.NETS)
    for v in engine_nets.VARIANTS
]


@pytest.mark.parametrize(("name", "variant"), _CASES)
def test_round_trip_equal(tmp_path: Path, name: str, variant: str) -> None:
    """Every fixture net survives ONNX -> torch -> ONNX with outputs equal within 1e-5."""
    path = engine_nets.export_net(name, tmp_path, variant)
    original = onnx.load(str(path))
    module = to_torch(original)
    back = to_onnx(module, tmp_path / "back.onnx")

    assert [i.name for i in back.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in back.graph.output] == [o.name for o in original.graph.output]
    assert back.opset_import[0].version == 13
    assert _ops(back).count("BatchNormalization") == _ops(original).count("BatchNormalization")
    assert _ops(back).count("Conv") == _ops(original).count("Conv")
    shape = engine_nets.NETS[name]()[1]
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)  # batch 3: axis 0 is dynamic
    ref = _run(original, x)
    np.testing.assert_allclose(_run(back, x), ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), ref, atol=1e-5, rtol=0)
    assert onnx.load(str(tmp_path / "back.onnx")).graph.node  # written to disk as well


def test_bn_kept_and_trainable(tmp_path: Path) -> None:
    """BN stays a BatchNorm2d module whose parameters train, and conv weights are parameters."""
    module = to_torch(engine_nets.export_net("resnet20", tmp_path, "bn"))
    kinds = {type(m).__name__ for m in module.modules()}
    assert "BatchNorm2d" in kinds and "Conv2d" in kinds
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    assert any("Conv" in n for n in names) and any("BatchNorm" in n for n in names)


def _matmul_model(op: str = "Relu", domain: str = "", opset: int = 13) -> onnx.ModelProto:
    """input[N,8] -> MatMul(W) -> Add(b) -> `op` -> output[N,4]."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="add"),
        helper.make_node(op, ["a"], ["output"], name="the_op", domain=domain),
    ]
    graph = helper.make_graph(
        nodes,
        "mm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b"),
        ],
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports)


def test_matmul_weight_becomes_trainable_and_round_trips() -> None:
    """A MatMul initializer becomes a parameter (fine-tuning reaches it); the round trip stays equal."""
    model = _matmul_model()
    module = to_torch(model)
    assert sum(p.numel() for p in module.parameters()) == 8 * 4
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(module), x), _run(model, x), atol=1e-5, rtol=0)


def test_unsupported_op_names_op_and_opset() -> None:
    """An op onnx2torch lacks stops the conversion with its name, opset and node."""
    model = _matmul_model("Hardmax")
    assert [m[2] for m in unsupported_nodes(model)] == ["Hardmax"]
    with pytest.raises(ConversionError, match=r"Hardmax at opset 13 \(node 'the_op'\)"):
        to_torch(model)


def test_custom_domain_op_is_named() -> None:
    """A vendor-domain op (e.g. com.microsoft) is named with its domain."""
    with pytest.raises(ConversionError, match=r"com\.microsoft::Gelu"):
        to_torch(_matmul_model("Gelu", domain="com.microsoft"))


def test_conversion_error_exits_2() -> None:
    """Unconvertible input is bad input: exit code 2."""
    assert ConversionError("x").exit_code == 2


def test_global_max_pool_is_handled() -> None:
    """GlobalMaxPool, missing from onnx2torch 1.5, converts and round-trips."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("GlobalMaxPool", ["c"], ["g"], name="gmp"),
            helper.make_node("Flatten", ["g"], ["logits"], name="flatten", axis=1),
        ],
        "gmp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    xs = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(to_torch(model)), xs), _run(model, xs), atol=1e-5, rtol=0)


def test_opset_clamped_into_readable_range() -> None:
    """A model at opset 11 comes back at 13, one at 13 stays at 13."""
    model = _matmul_model(opset=11)
    assert to_onnx(to_torch(model)).opset_import[0].version == 13
