"""agmc_onnx.data.cifar: CIFAR-10/100 pickle and binary batches; pickles cannot run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from agmc_onnx.data import Preprocess, detect_format, load_dataset
from agmc_onnx.errors import InputError
from tests.data.writers import RNG, write_cifar_pickle


def test_cifar10_pickle(tmp_path: Path) -> None:
    data, labels = write_cifar_pickle(tmp_path / "cifar-10-batches-py")
    root = tmp_path / "cifar-10-batches-py"
    assert detect_format(root) == "cifar-pickle"
    tr = load_dataset(root, "train")
    assert tr.x.shape == (8, 3, 32, 32) and tr.classes[:2] == ["k0", "k1"]
    np.testing.assert_allclose(tr.x.reshape(8, -1), data[:8] / 255, atol=1e-6)  # CHW order kept
    np.testing.assert_array_equal(tr.y, labels[:8])
    te = load_dataset(root, "test", Preprocess(channels=1, layout="NHWC"))
    assert te.x.shape == (4, 32, 32, 1) and te.layout == "NHWC"


def test_cifar100_pickle(tmp_path: Path) -> None:
    _, labels = write_cifar_pickle(tmp_path / "c100", hundred=True)
    ds = load_dataset(tmp_path / "c100", "test")
    assert ds.num_classes == 100 and ds.classes[5] == "c5"
    np.testing.assert_array_equal(ds.y, labels[8:])


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    root = tmp_path / "evil"
    root.mkdir()

    class Boom:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Boom(), b"labels": [0]}, f, 2)
    with pytest.raises(InputError, match="not allowed") as e:
        load_dataset(root)
    assert "data_batch_1" in str(e.value)


def test_cifar_pickle_missing_key(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f, 2)
    with pytest.raises(InputError, match="lacks 'data' or 'labels'"):
        load_dataset(root, "test")


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_binary(tmp_path: Path, hundred: bool) -> None:
    nlab = 2 if hundred else 1
    rec = RNG.integers(0, 256, (6, nlab + 3072), dtype=np.uint8)
    rec[:, :nlab] = RNG.integers(0, 10, (6, nlab))
    names = ("train.bin", "test.bin") if hundred else ("data_batch_1.bin", "test_batch.bin")
    for name in names:
        (tmp_path / name).write_bytes(rec.tobytes())
    (tmp_path / ("fine_label_names.txt" if hundred else "batches.meta.txt")).write_text(
        "\n".join(f"n{i}" for i in range(10)) + "\n")
    assert detect_format(tmp_path) == "cifar-binary"
    ds = load_dataset(tmp_path, "train")
    np.testing.assert_array_equal(ds.y, rec[:, nlab - 1])
    np.testing.assert_allclose(ds.x.reshape(6, -1), rec[:, nlab:] / 255, atol=1e-6)
    assert ds.classes[3] == "n3"
    (tmp_path / names[1]).write_bytes(rec.tobytes()[:-5])
    with pytest.raises(InputError, match="not a multiple") as e:
        load_dataset(tmp_path, "test")
    assert names[1] in str(e.value)
