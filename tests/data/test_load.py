"""agmc_onnx.data.load: format detection, label range against the model, bad paths, shipped data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import fashion_mnist_dir, load_dataset
from agmc_onnx.errors import InputError
from tests.data.writers import images, write_idx


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_idx(tmp_path, images(4), np.array([0, 1, 9, 2]))
    with pytest.raises(InputError, match="label 9 at index 2 is out of range for 5 classes") as e:
        load_dataset(tmp_path, num_classes=5)
    assert "train-images" in str(e.value)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(InputError, match="out of range for 3"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="3 classes but the model has 10"):
        load_dataset(tmp_path, num_classes=10)


def test_missing_and_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match="must be an .npz"):
        load_dataset(tmp_path / "f.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="empty or unrecognised"):
        load_dataset(tmp_path / "d")
    (tmp_path / "z.npz").write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_dataset(tmp_path / "z.npz")
    with pytest.raises(InputError, match="split must be"):
        load_dataset(tmp_path / "z.npz", "val")


def test_shipped_fashion_mnist_subset() -> None:
    root = fashion_mnist_dir()
    tr, te = load_dataset(root, "train", num_classes=10), load_dataset(root, "test", num_classes=10)
    assert tr.x.shape == (10000, 1, 28, 28) and te.x.shape == (2000, 1, 28, 28)
    assert np.bincount(tr.y).tolist() == [1000] * 10 and np.bincount(te.y).tolist() == [200] * 10
    assert tr.classes[0] == "T-shirt/top" and tr.classes[9] == "Ankle boot"
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    size = sum(p.stat().st_size for p in root.iterdir())
    assert size < 10 * 2**20
