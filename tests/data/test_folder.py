"""agmc_onnx.data.folder: ImageFolder trees, grey and mixed sizes, bad folders and images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import Preprocess, detect_format, load_dataset
from agmc_onnx.errors import InputError
from tests.data.writers import images, png


def test_image_folder_png_jpeg(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                png(tmp_path / split / cls / f"{i}.png", images(1, 10, 12, 3)[0])
    png(tmp_path / "train" / "dog" / "x.jpg", images(1, 10, 12, 3)[0])
    assert detect_format(tmp_path) == "imagefolder"
    tr = load_dataset(tmp_path, "train", Preprocess(size=(16, 16), channels=3))
    assert tr.classes == ["cat", "dog"] and tr.x.shape == (7, 3, 16, 16)
    np.testing.assert_array_equal(tr.y, [0, 0, 0, 1, 1, 1, 1])
    te = load_dataset(tmp_path, "test")
    assert te.x.shape == (4, 3, 10, 12)


def test_image_folder_grey_and_sizes(tmp_path: Path) -> None:
    png(tmp_path / "a" / "1.png", images(1, 8, 8)[0])
    png(tmp_path / "b" / "2.png", images(1, 9, 7)[0])
    with pytest.raises(InputError, match="differ in size") as e:
        load_dataset(tmp_path)
    assert "2.png" in str(e.value)
    ds = load_dataset(tmp_path, preprocess=Preprocess(size=(8, 8), resize="pad"))
    assert ds.x.shape == (2, 1, 8, 8)


def test_image_folder_bad_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty or unrecognised"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "split" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="no class sub-folders") as e:
        load_dataset(tmp_path / "split")
    assert e.value.path == str(tmp_path / "split" / "train")
    (tmp_path / "tree" / "cls" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="class folder has no images") as e:
        load_dataset(tmp_path / "tree")
    assert e.value.path == str(tmp_path / "tree" / "cls")
    bad = tmp_path / "tree" / "cls" / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="unreadable image") as e:
        load_dataset(tmp_path / "tree")
    assert e.value.path == str(bad)
