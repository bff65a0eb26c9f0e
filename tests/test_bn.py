"""agmc_onnx.bn: re-calibration takes images the way the Evaluator holds them (torch tensors on its device) or as
numpy."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from agmc_onnx.bn import bn_nodes, recalibrated_onnx


def _bn_stats(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Running mean/var initializers of every BN node."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {name: inits[name] for node in bn_nodes(proto) for name in node.input[3:5]}


def test_recalibrated_onnx_accepts_tensors_and_arrays(tmp_path: Path) -> None:
    """A tensor (how the Evaluator keeps its calibration images) and its numpy copy give the same statistics."""
    from fixtures.engine_nets import export_net

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        path = export_net("flatten_gemm", tmp_path, "bn")
    proto = onnx.load(str(path))
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    from_array = _bn_stats(recalibrated_onnx(proto, images, 32, "cpu"))
    from_tensor = _bn_stats(recalibrated_onnx(proto, torch.from_numpy(images), 32, "cpu"))
    original = _bn_stats(proto)
    assert from_array and from_array.keys() == from_tensor.keys()
    for name in from_array:
        np.testing.assert_allclose(from_tensor[name], from_array[name], rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(from_array[n], original[n]) for n in original)  # statistics really re-estimated
