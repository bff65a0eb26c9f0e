"""agmc_onnx.data.npz: .npz layouts and split keys; bad arrays and labels name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import detect_format, load_dataset
from agmc_onnx.errors import InputError
from tests.data.writers import RNG, images


def test_npz_formats(tmp_path: Path) -> None:
    x = images(6, 5, 5, 3)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 3, classes=np.array(["p", "q", "r"]))
    ds = load_dataset(tmp_path / "a.npz")
    assert detect_format(tmp_path / "a.npz") == "npz"
    assert ds.x.shape == (6, 3, 5, 5) and ds.classes == ["p", "q", "r"]
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    # NCHW float images in [0, 1] and split keys
    xf = RNG.random((4, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x_train=xf, y_train=np.array([0, 1, 1, 0]), x_test=xf[:2], y_test=np.array([1, 0]))
    tr, te = load_dataset(tmp_path / "b.npz", "train"), load_dataset(tmp_path / "b.npz", "test")
    np.testing.assert_allclose(tr.x, xf)  # float data: scale defaults to 1
    assert len(te) == 2


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((3, 4))}, "needs arrays 'x' and 'y'"),
    ({"x": np.zeros((3, 4)), "y": np.zeros(3)}, r"'x' has shape \[3, 4\].*neither images \[N,H,W\]"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2)}, "2 labels for 3 images"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0.0, 1.5, 1.0])}, "labels must be integers"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0, -1, 1])}, "negative label"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros((3, 2))}, "y must be 1-D"),
    ({"x": np.zeros((0, 4, 4)), "y": np.zeros(0, np.int64)}, "no examples"),
])
def test_npz_bad_data(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match) as e:
        load_dataset(tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value)
