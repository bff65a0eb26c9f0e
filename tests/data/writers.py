"""Small data files in every supported format, written by the data tests."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

RNG = np.random.default_rng(0)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_idx(root: Path, x: np.ndarray, y: np.ndarray, prefix: str = "train", gz: bool = True) -> None:
    """Write an MNIST-style images/labels pair."""
    root.mkdir(parents=True, exist_ok=True)
    for kind, arr, nd in (("images", x, 3), ("labels", y, 1)):
        name = f"{prefix}-{kind}-idx{nd}-ubyte"
        data = idx_bytes(arr.astype(np.uint8))
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


def images(n: int, h: int = 8, w: int = 8, c: int | None = None) -> np.ndarray:
    """Random uint8 images."""
    shape = (n, h, w) if c is None else (n, h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def write_cifar_pickle(root: Path, hundred: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 2-batch CIFAR-10 (or CIFAR-100) python directory, pickled as the originals (protocol 2, bytes keys)."""
    root.mkdir(parents=True)
    data = RNG.integers(0, 256, (12, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, 12)]
    if hundred:
        for split, sl in (("train", slice(0, 8)), ("test", slice(8, 12))):
            with open(root / split, "wb") as f:
                pickle.dump({b"data": data[sl], b"fine_labels": labels[sl], b"coarse_labels": [0] * 4}, f, 2)
        with open(root / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f, 2)
    else:
        for i, sl in enumerate((slice(0, 4), slice(4, 8)), 1):
            with open(root / f"data_batch_{i}", "wb") as f:
                pickle.dump({b"data": data[sl], b"labels": labels[sl]}, f, 2)
        with open(root / "test_batch", "wb") as f:
            pickle.dump({b"data": data[8:], b"labels": labels[8:]}, f, 2)
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"k{i}".encode() for i in range(10)]}, f, 2)
    return data, np.array(labels)


def png(path: Path, arr: np.ndarray) -> None:
    """Write an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def tiny_model(path: Path, shape: list[int | str]) -> Path:
    """An Identity ONNX model with the given input shape."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g", [inp], [out])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path
