"""agmc_onnx.data.idx: IDX files (gz or raw), class names, bad headers and counts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import detect_format, load_dataset, read_idx
from agmc_onnx.errors import InputError
from tests.data.writers import idx_bytes, images, write_idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_train_and_test(tmp_path: Path, gz: bool) -> None:
    x, y = images(20), np.arange(20) % 4
    write_idx(tmp_path, x, y, "train", gz)
    write_idx(tmp_path, x[:6], y[:6], "t10k", gz)
    assert detect_format(tmp_path) == "idx"
    tr = load_dataset(tmp_path, "train")
    assert tr.x.shape == (20, 1, 8, 8) and tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    np.testing.assert_allclose(tr.x[:, 0], x / 255, atol=1e-6)
    np.testing.assert_array_equal(tr.y, y)
    assert tr.classes == ["0", "1", "2", "3"]
    assert len(load_dataset(tmp_path, "test")) == 6


def test_idx_classes_txt_and_test_prefix(tmp_path: Path) -> None:
    write_idx(tmp_path, images(5), np.array([0, 1, 2, 0, 1]), "test")
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    ds = load_dataset(tmp_path, "test")
    assert ds.classes == ["a", "b", "c", "d"]


def test_idx_bad_magic_and_truncated(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 12)
    with pytest.raises(InputError, match="bad magic") as e:
        read_idx(bad)
    assert e.value.path == str(bad)
    data = idx_bytes(images(4))
    (tmp_path / "t.gz").write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(InputError, match="bytes") as e:
        read_idx(tmp_path / "t.gz")
    assert "t.gz" in str(e.value)
    (tmp_path / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        read_idx(tmp_path / "c.gz")


def test_idx_count_mismatch_and_missing_labels(tmp_path: Path) -> None:
    write_idx(tmp_path, images(5), np.zeros(4))
    with pytest.raises(InputError, match="4 labels for 5 images") as e:
        load_dataset(tmp_path)
    assert "train-labels" in str(e.value)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="no train-labels"):
        load_dataset(tmp_path)
