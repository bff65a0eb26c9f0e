"""agmc_onnx.data.arrays: .npy/.npz of model input tensors (used as they are) or raw images; bad arrays name
the file and the array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from agmc_onnx.data import Preprocess, detect_format, load_dataset, model_inputs
from agmc_onnx.errors import InputError
from tests.data.writers import RNG, images


def two_input_model(path: Path) -> Path:
    """`image` [N,3,8,8] float and `scale` [N,2] float -> image * mean(scale)."""
    a = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])
    b = helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 8, 8])
    nodes = [helper.make_node("ReduceMean", ["scale"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m4"]),
             helper.make_node("Mul", ["image", "m4"], ["out"])]
    ax = helper.make_tensor("ax", TensorProto.INT64, [2], [2, 3])
    g = helper.make_graph(nodes, "g", [a, b], [out], [ax])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_tensors_by_input_name(tmp_path: Path) -> None:
    """An .npz keyed by input names: each array feeds its input as it is (float64 cast), no Preprocess."""
    inputs = model_inputs(onnx.load(str(two_input_model(tmp_path / "m.onnx"))))
    assert [i.name for i in inputs] == ["image", "scale"] and inputs[0].shape == (None, 3, 8, 8)
    img, sc = RNG.standard_normal((5, 3, 8, 8)), RNG.random((5, 2)).astype(np.float32)
    np.savez(tmp_path / "t.npz", scale=sc, image=img)
    ds = load_dataset(tmp_path / "t.npz", preprocess=Preprocess(scale=0.5), labels=False, inputs=inputs)
    np.testing.assert_allclose(ds.x, img.astype(np.float32))  # not scaled: preprocessed tensors bypass Preprocess
    np.testing.assert_array_equal(ds.extra[0], sc)
    assert ds.y is None and len(ds.subset([0, 2]).extra[0]) == 2


@pytest.mark.parametrize("arrays, match", [
    ({"image": np.zeros((2, 3, 8, 8), np.float32)}, "npz lacks model input 'scale'"),
    ({"image": np.zeros((2, 3, 8, 8), np.uint8), "scale": np.zeros((2, 2))}, r"array 'image' is uint8"),
    ({"image": np.zeros((2, 3, 4, 4)), "scale": np.zeros((2, 2))}, r"array 'image' has shape \[2, 3, 4, 4\]"),
    ({"image": np.zeros((2, 3, 8, 8)), "scale": np.zeros((3, 2))}, "different numbers of examples"),
    ({"x": np.zeros((2, 3, 8, 8))}, "model has inputs"),
])
def test_named_tensors_bad_data(tmp_path: Path, arrays: dict, match: str) -> None:
    inputs = model_inputs(onnx.load(str(two_input_model(tmp_path / "m.onnx"))))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match) as info:
        load_dataset(tmp_path / "bad.npz", labels=False, inputs=inputs)
    assert "bad.npz" in str(info.value) and "\n" not in str(info.value)


def test_unnamed_array_tensor_or_images(tmp_path: Path) -> None:
    """One unnamed array: a float array shaped as the input is the tensor; uint8 images are preprocessed."""
    from tests.data.writers import tiny_model

    inputs = model_inputs(onnx.load(str(tiny_model(tmp_path / "m.onnx", ["N", 1, 6, 6]))))
    t = RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)
    np.save(tmp_path / "t.npy", t)
    assert detect_format(tmp_path / "t.npy") == "npy"
    np.testing.assert_array_equal(load_dataset(tmp_path / "t.npy", labels=False, inputs=inputs).x, t)
    imgs = images(4, 6, 6)
    np.savez(tmp_path / "i.npz", x_train=imgs, x_test=imgs[:2])  # images only: labels withheld
    tr = load_dataset(tmp_path / "i.npz", "train", Preprocess(size=(6, 6), channels=1), labels=False, inputs=inputs)
    te = load_dataset(tmp_path / "i.npz", "test", Preprocess(size=(6, 6), channels=1), labels=False, inputs=inputs)
    np.testing.assert_allclose(tr.x[:, 0], imgs / 255.0, atol=1e-6)
    assert len(te) == 2 and tr.y is None
    np.savez(tmp_path / "frames.npz", imgs)  # the only array, whatever its name
    assert len(load_dataset(tmp_path / "frames.npz", labels=False, inputs=inputs)) == 4


@pytest.mark.parametrize("save, match", [
    (lambda p: np.save(p / "bad.npy", np.zeros((3, 5))), r"array '\(the .npy array\)' has shape \[3, 5\]"),
    (lambda p: np.save(p / "bad.npy", np.zeros((0, 1, 6, 6), np.float32)), "holds no examples"),
    (lambda p: np.save(p / "bad.npy", np.array(["a", "b"])), "must be numeric"),
    (lambda p: np.savez(p / "bad.npz", a=np.zeros((2, 6, 6)), b=np.zeros((2, 6, 6))), "which array holds"),
    (lambda p: (p / "bad.npz").write_bytes(b"not a zip"), "not a readable .npz"),
])
def test_unnamed_array_bad_data(tmp_path: Path, save, match: str) -> None:  # noqa: ANN001
    from tests.data.writers import tiny_model

    inputs = model_inputs(onnx.load(str(tiny_model(tmp_path / "m.onnx", ["N", 1, 6, 6]))))
    save(tmp_path)
    path = next(tmp_path.glob("bad.*"))
    with pytest.raises(InputError, match=match) as info:
        load_dataset(path, labels=False, inputs=inputs)
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_fixed_batch(tmp_path: Path) -> None:
    """A static export's batch of 1 is honoured (fed one at a time); a free batch is None; other sizes refused."""
    from agmc_onnx.data import fixed_batch
    from tests.data.writers import tiny_model

    assert fixed_batch(onnx.load(str(tiny_model(tmp_path / "a.onnx", [1, 3, 8, 8])))) == 1
    assert fixed_batch(onnx.load(str(tiny_model(tmp_path / "b.onnx", ["N", 3, 8, 8])))) is None
    with pytest.raises(InputError, match="fixes the batch size to 4"):
        fixed_batch(onnx.load(str(tiny_model(tmp_path / "c.onnx", [4, 3, 8, 8]))))
