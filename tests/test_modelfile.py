"""agmc_onnx.modelfile: the one model-file reader, and the weight checks onnx.checker does not make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.errors import InputError
from agmc_onnx.modelfile import output_classes, read_model_file, weight_problem
from tests.commands.refusal_kit import mismatched_weights, nan_weight
from tests.helpers_onnx import tiny_convnet

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def _with(model: onnx.ModelProto, name: str, array: np.ndarray) -> onnx.ModelProto:
    """A copy of `model` with initializer `name` set to `array`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.asarray(array, np.float32), name))
    return out


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "mobilenetv2", "vgg11"])
def test_shipped_models_pass(name: str) -> None:
    """Real exports (grouped and depthwise convs, BN, Gemm) have no weight problem."""
    proto = read_model_file(MODELS / f"{name}.onnx")
    assert weight_problem(proto) is None and output_classes(proto) == 10


def test_checker_alone_misses_a_weight_that_does_not_fit() -> None:
    """The reason for the check: onnx's full check and strict inference accept an 8x5x3x3 weight on 3 channels."""
    model = mismatched_weights()
    onnx.checker.check_model(model, full_check=True)
    problem = weight_problem(model)
    assert problem is not None and "w1 is 8x5x3x3" in problem and "has 3 channels" in problem


@pytest.mark.parametrize(
    ("name", "shape", "words"),
    [
        ("b1", (5,), "bias b1 has shape 5 for 8 output channels"),
        ("w2", (8, 4, 3, 3), "w2 is 8x4x3x3"),
        ("wfc", (4, 6), "wfc is 4x6 for 6 features but its input 'f' has 8"),
    ],
)
def test_misfit_weights_are_named(name: str, shape: tuple[int, ...], words: str) -> None:
    problem = weight_problem(_with(tiny_convnet(), name, np.ones(shape)))
    assert problem is not None and words in problem, problem


def test_non_finite_weights() -> None:
    """NaN anywhere is refused; inf in a weight is, inf elsewhere (a Clip bound, a mask) is not."""
    assert "1 NaN value(s)" in (weight_problem(nan_weight()) or "")
    w1 = numpy_helper.to_array(tiny_convnet().graph.initializer[0]).copy()
    w1[0, 0, 0, 0] = np.inf
    assert "1 inf value(s)" in (weight_problem(_with(tiny_convnet(), "w1", w1)) or "")
    model = tiny_convnet()
    graph = model.graph
    graph.node[-1].output[0] = "raw"
    graph.initializer.extend([numpy_helper.from_array(np.array(-np.inf, np.float32), "lo"),
                              numpy_helper.from_array(np.array(np.inf, np.float32), "hi")])  # fmt: skip
    graph.node.append(helper.make_node("Clip", ["raw", "lo", "hi"], ["logits"], name="clip"))
    assert weight_problem(model) is None


def test_read_refuses_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "w.onnx"
    onnx.save_model(mismatched_weights(), str(path))
    with pytest.raises(InputError, match=r"w\.onnx: Conv 'conv1': weight w1 .* do not fit the graph"):
        read_model_file(path)
    assert read_model_file(path, check_weights=False).graph.node


def test_a_2gib_model_is_refused_before_its_data_is_read(tmp_path: Path) -> None:
    """External tensors count by their declared length: 2 GiB or more is refused at once (no data file needed)."""
    model = tiny_convnet()
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1, 2**29])
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.data"), ("offset", "0"), ("length", str(2**31))):
        big.external_data.add(key=key, value=value)
    model.graph.initializer.append(big)
    onnx.save_model(model, str(tmp_path / "big.onnx"))
    with pytest.raises(InputError, match=r"big\.onnx: model is 2\.0 GiB .* not supported"):
        read_model_file(tmp_path / "big.onnx")


def test_missing_external_data_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative or absolute, a missing data file is named in the tool's words."""
    onnx.save_model(tiny_convnet(), str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)  # fmt: skip
    (tmp_path / "ext.onnx.data").unlink()
    monkeypatch.chdir(tmp_path)
    for path in ("ext.onnx", tmp_path / "ext.onnx"):
        with pytest.raises(InputError, match=r"missing external data file ext\.onnx\.data"):
            read_model_file(path)


def test_output_classes() -> None:
    assert output_classes(tiny_convnet()) == 4
    model = tiny_convnet()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    assert output_classes(model) is None
