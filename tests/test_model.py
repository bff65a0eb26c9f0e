"""Graph import: checks, normalisation (BN kept, interface kept), shapes, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from agmc_onnx.errors import InputError
from agmc_onnx.model import load
from tests.conftest import feeds, max_diff, run


def test_bn_kept_and_interface_unchanged(nets: dict) -> None:
    """Normalising keeps every BatchNormalization, the I/O names, the dynamic batch and the outputs."""
    src = onnx.load(str(nets["residual"]))
    m = load(nets["residual"])
    count = lambda p, op: sum(n.op_type == op for n in p.graph.node)  # noqa: E731
    assert count(m.proto, "BatchNormalization") == count(src, "BatchNormalization") > 0
    assert m.input_names == ["input"] and m.output_names == ["output"]
    assert m.shape("input")[0] == "batch" and m.shape("output") == ["batch", 5]
    assert m.proto.opset_import == src.opset_import and m.proto.ir_version == src.ir_version
    x = feeds(src)
    assert max_diff(run(m.proto, x), run(src, x)) <= 1e-5


def test_folded_variant_has_no_bn(nets: dict) -> None:
    """The BN-folded export loads with conv biases and no BN nodes."""
    m = load(nets["residual.folded"])
    assert not any(n.op_type == "BatchNormalization" for n in m.nodes)


def test_external_data_loaded(nets: dict, tmp_path: Path) -> None:
    """A model saved with external data loads with its weights."""
    src = onnx.load(str(nets["flatten"]))
    path = tmp_path / "ext.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(src)  # save_model with external data rewrites the proto it is given
    onnx.save_model(copy, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    m = load(path)
    x = feeds(src)
    assert max_diff(run(m.proto, x), run(src, x)) <= 1e-5


def _expect(path: Path, *words: str) -> None:
    """load(path) raises an InputError naming the file and one of `words`."""
    with pytest.raises(InputError) as info:
        load(path)
    msg = str(info.value)
    assert path.name in msg and any(w in msg.lower() for w in words), msg


def test_bad_files(nets: dict, tmp_path: Path) -> None:
    """Not ONNX, truncated, missing, missing external data, unsupported opset: InputError, named."""
    (tmp_path / "text.onnx").write_bytes(b"hello world\n" * 20)
    _expect(tmp_path / "text.onnx", "onnx")
    data = Path(nets["residual"]).read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 3])
    _expect(tmp_path / "trunc.onnx", "onnx", "valid")
    _expect(tmp_path / "nope.onnx", "no such file")
    src = onnx.load(str(nets["flatten"]))
    onnx.save_model(src, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    _expect(tmp_path / "ext.onnx", "external")
    src = onnx.load(str(nets["flatten"]))
    src.opset_import[0].version = 30
    onnx.save_model(src, str(tmp_path / "op30.onnx"))
    _expect(tmp_path / "op30.onnx", "opset")


def test_constants_are_plain_initializers(nets: dict) -> None:
    """After loading no Constant node remains and weights are numpy arrays."""
    m = load(nets["dense"])
    assert not any(n.op_type == "Constant" for n in m.nodes)
    assert all(isinstance(v, np.ndarray) for v in m.inits.values())
    names = [n.name for n in m.nodes]
    assert len(set(names)) == len(names) and all(names)
