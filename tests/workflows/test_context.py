"""agmc_onnx/workflows/context.py: the run's preprocessing follows --input-shape for a dynamic-size input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from agmc_onnx.workflows.context import build_context
from tests.ops.helpers import weight

YOLO_META = {"imgsz": "[640, 640]", "channels": "3", "stride": "32"}


def _model(dims: list, meta: dict[str, str] | None = None) -> onnx.ModelProto:
    """x[dims] -> Conv(3->4, 1x1) -> y[dims with 4 channels]."""
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, *dims[2:]])],
                          [weight("w", 4, 3, 1, 1)])  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # of two sizes: a size to bring them to is needed, and --input-shape gives one
        h, w = (48, 40) if i % 2 else (30, 50)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def test_input_shape_sets_the_image_size_over_the_exporters(tmp_path: Path) -> None:
    """An Ultralytics-style dynamic file: images letterboxed to its imgsz by default, to the --input-shape when
    given (the run analyses, searches and trains at one size), and the run says so."""
    path = tmp_path / "dyn.onnx"
    onnx.save(_model(["batch", 3, "height", "width"], YOLO_META), str(path))
    data = _folder(tmp_path)
    default = build_context(path, data)
    assert default.preprocess is not None and default.preprocess.size == (640, 640)
    given = build_context(path, data, input_shapes={"": (1, 3, 32, 64)})
    assert given.preprocess is not None and given.preprocess.size == (32, 64)
    assert given.preprocess.resize == "letterbox" and given.train is not None
    assert given.train.x.shape[1:] == (3, 32, 64)
    assert any("images go to 32x64 (letterbox), the --input-shape of 'x', not 640x640" in n for n in given.notes)


def test_static_file_keeps_its_own_size(tmp_path: Path) -> None:
    """A static input fixes the size already: nothing to change, nothing said."""
    path = tmp_path / "static.onnx"
    onnx.save(_model([1, 3, 24, 24]), str(path))
    ctx = build_context(path, _folder(tmp_path), input_shapes={"": (1, 3, 24, 24)})
    assert ctx.preprocess is not None and ctx.preprocess.size == (24, 24)
    assert not any("--input-shape of" in n for n in ctx.notes)
