"""The analysis size of each graph input (agmc_onnx/inputs.py): --input-shape > exporter metadata > the file."""

from __future__ import annotations

from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from agmc_onnx.errors import InputError
from agmc_onnx.inputs import (
    declared_inputs,
    parse_input_shape,
    parse_input_shapes,
    resolve_input_shapes,
    with_input_dims,
)
from tests.ops.helpers import weight


def _model(dims: list[Any], meta: dict[str, str] | None = None, inits_as_inputs: bool = False) -> onnx.ModelProto:
    """x[dims] -> Conv(3->4, 1x1) -> y; metadata_props from `meta`."""
    w = weight("w", 4, 3, 1, 1)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    if inits_as_inputs:
        inputs.insert(0, helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 1, 1]))
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def test_parse_named_and_unnamed() -> None:
    """NAME:D0,D1,... and D0,D1,... (one-input models); a name may itself hold a colon (TF's 'x:0')."""
    assert parse_input_shape("images:1,3,640,640") == ("images", (1, 3, 640, 640))
    assert parse_input_shape("1,3,48,320") == (None, (1, 3, 48, 320))
    assert parse_input_shape("input:0:1,3,8,8") == ("input:0", (1, 3, 8, 8))
    assert parse_input_shapes(["a:1,2", "b:1,3"]) == {"a": (1, 2), "b": (1, 3)}
    assert parse_input_shapes(None) is None
    for bad in ("x:1,3,a,4", "x:", "x:0,3,8,8"):
        with pytest.raises(InputError, match="--input-shape"):
            parse_input_shape(bad)
    with pytest.raises(InputError, match="given twice"):
        parse_input_shapes(["x:1,3", "x:1,4"])


def test_static_file_needs_no_flag_and_keeps_a_symbolic_batch() -> None:
    """Static spatial dims are the analysis size; a symbolic batch stays a symbol; initializers listed as
    inputs (old IR) are weights, not inputs."""
    got = resolve_input_shapes(_model(["N", 3, 8, 8], inits_as_inputs=True))
    assert got.dims == {"x": ("N", 3, 8, 8)} and got.source == "file" and got.note is None and got.dynamic == ()
    assert got.fixed(4) == {"x": [4, 3, 8, 8]}
    assert list(declared_inputs(_model(["N", 3, 8, 8], inits_as_inputs=True))) == ["x"]


def test_dynamic_file_is_refused_with_one_line_naming_input_shape_and_flag() -> None:
    """No size recorded anywhere: one line with the input's name, its declared shape and the flag to use."""
    with pytest.raises(InputError) as err:
        resolve_input_shapes(_model(["batch", 3, "height", "width"]))
    msg = str(err.value)
    assert "\n" not in msg
    assert "'x'" in msg and "[batch, 3, height, width]" in msg and "--input-shape x:1,3,H,W" in msg


def test_paddle_minus_one_batch_is_symbolic() -> None:
    """Paddle2ONNX writes the batch as dim_value -1: a symbolic dim like any other."""
    m = _model([-1, 3, "?", "?"])
    assert declared_inputs(m) == {"x": [None, 3, "?", "?"]}
    got = resolve_input_shapes(m, {"x": (1, 3, 48, 192)})
    assert got.dims == {"x": ("x_batch", 3, 48, 192)} and got.dynamic == ("x",) and got.source == "--input-shape"
    assert resolve_input_shapes(_model([-1, 3, 8, 8])).dims == {"x": ("x_batch", 3, 8, 8)}


def test_ultralytics_metadata_gives_the_default_size_and_says_so() -> None:
    """Ultralytics records imgsz '[640, 640]' and channels '3' in metadata_props (dynamic=True exports too)."""
    m = _model(["batch", 3, "height", "width"], {"imgsz": "[640, 640]", "channels": "3", "stride": "32"})
    got = resolve_input_shapes(m)
    assert got.dims == {"x": ("batch", 3, 640, 640)} and got.source == "metadata"
    assert got.note is not None and "metadata" in got.note and "imgsz [640, 640]" in got.note and "--input-shape" in got.note
    # the flag wins over the metadata
    assert resolve_input_shapes(m, {"": (1, 3, 320, 416)}).dims == {"x": ("batch", 3, 320, 416)}


def test_given_sizes_are_checked_against_the_file() -> None:
    """A name that is no input, a wrong rank, or a dim the file fixes otherwise: refused, saying which."""
    m = _model(["N", 3, "H", "W"])
    with pytest.raises(InputError, match="not an input of the model"):
        resolve_input_shapes(m, {"images": (1, 3, 8, 8)})
    with pytest.raises(InputError, match="rank 3"):
        resolve_input_shapes(m, {"x": (1, 3, 8)})
    with pytest.raises(InputError, match="fixed at 3"):
        resolve_input_shapes(m, {"x": (1, 4, 8, 8)})


def test_with_input_dims_sets_the_declared_dims_and_clears_shapes() -> None:
    """The copy declares the given dims (symbols stay symbols) and carries no stale shapes."""
    m = _model(["N", 3, "H", "W"], inits_as_inputs=True)
    m.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2]))
    out = with_input_dims(m, {"x": ("N", 3, 16, 12)})
    assert [i.name for i in out.graph.input] == ["x"] and not out.graph.value_info
    dims = [d.dim_param or d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 16, 12]
    assert [i.name for i in m.graph.input] == ["w", "x"]  # the original is untouched
