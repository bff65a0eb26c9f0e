"""agmc_onnx.data.flat: a flat folder of images (or video frames) is unlabelled data; bad folders name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import Preprocess, detect_format, load_dataset
from agmc_onnx.errors import InputError
from tests.data.writers import images, png


def test_flat_folder_of_frames(tmp_path: Path) -> None:
    """Frames of any size, sorted by name, brought to the model's size; no labels; train/test sub-folders split."""
    frames = tmp_path / "frames"
    for i, (h, w) in enumerate([(12, 16), (16, 12), (10, 10)]):
        png(frames / f"frame_{i:04d}.png", images(1, h, w, 3)[0])
    assert detect_format(frames) == "images"
    ds = load_dataset(frames, "train", Preprocess(size=(8, 8), resize="letterbox"), labels=False)
    assert ds.x.shape == (3, 3, 8, 8) and ds.y is None and not ds.labelled
    with pytest.raises(InputError, match="no test images"):
        load_dataset(frames, "test", Preprocess(size=(8, 8)), labels=False)
    split = tmp_path / "split"
    for name, n in (("train", 4), ("test", 2)):
        for i in range(n):
            png(split / name / f"{i}.png", images(1, 8, 8, 3)[0])
    assert detect_format(split) == "images"
    assert len(load_dataset(split, "train", labels=False)) == 4
    assert len(load_dataset(split, "test", labels=False)) == 2


def test_flat_folder_needs_labels_refused(tmp_path: Path) -> None:
    """A labelled run refuses a flat folder with one line saying why."""
    png(tmp_path / "a.png", images(1, 4, 4, 3)[0])
    with pytest.raises(InputError, match="flat image folder has no labels"):
        load_dataset(tmp_path)


def test_flat_folder_bad_data(tmp_path: Path) -> None:
    """Empty folder and unreadable image: one-line InputErrors naming the path."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty or unrecognised") as info:
        load_dataset(empty, labels=False)
    assert str(empty) in str(info.value)
    bad = tmp_path / "bad"
    png(bad / "0.png", images(1, 4, 4, 3)[0])
    (bad / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="unreadable image") as info:
        load_dataset(bad, labels=False)
    assert "1.jpg" in str(info.value) and "\n" not in str(info.value)


def test_labelled_folder_without_labels(tmp_path: Path) -> None:
    """A labelled set used without its labels still yields its labels (the run decides not to use them)."""
    for c in ("a", "b"):
        png(tmp_path / c / "0.png", images(1, 4, 4, 3)[0])
    ds = load_dataset(tmp_path, labels=False)
    np.testing.assert_array_equal(ds.y, [0, 1])
    assert ds.without_labels().y is None
