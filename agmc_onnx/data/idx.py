"""The IDX reader (MNIST family): one `<prefix>-images/labels-idx*-ubyte[.gz]` pair per split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agmc_onnx.data.raw import PathLike, Raw, int_labels, read_bytes
from agmc_onnx.errors import InputError

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
    """One IDX file (raw or .gz) as a numpy array, its size checked against its header."""
    p = Path(path)
    data = read_bytes(p)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError("not an IDX file (bad magic number)", p)
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError("truncated IDX header", p)
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"IDX header says {dims} ({expected} bytes) but the file has {len(data)} bytes", p)
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def _find_one(root: Path, prefixes: Sequence[str], kind: str) -> Path:
    """The single file in `root` named `<prefix>-<kind>-idx?-ubyte[.gz]` for one of the prefixes."""
    hits = sorted(p for p in root.iterdir() if p.is_file() and any(
        p.name.startswith(f"{pre}-{kind}-idx") for pre in prefixes))
    if not hits:
        raise InputError(f"no {prefixes[0]}-{kind}-idx*-ubyte[.gz] file", root)
    raw = [h for h in hits if h.suffix != ".gz"]
    return raw[0] if raw else hits[0]


def _read_classes_txt(root: Path) -> list[str] | None:
    """Class names from `classes.txt` (one per line) in `root`, if present."""
    p = root / "classes.txt"
    if not p.is_file():
        return None
    names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise InputError("classes.txt is empty", p)
    return names


def load_idx(root: Path, split: str) -> Raw:
    """IDX directory -> raw [N,H,W,C], labels, class names (classes.txt or Fashion-MNIST), source."""
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    ip, lp = _find_one(root, prefixes, "images"), _find_one(root, prefixes, "labels")
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise InputError(f"IDX images must be [N,H,W] or [N,H,W,C], got {list(images.shape)}", ip)
    if labels.ndim != 1:
        raise InputError(f"IDX labels must be 1-D, got {list(labels.shape)}", lp)
    if len(labels) != len(images):
        raise InputError(f"{len(labels)} labels for {len(images)} images in {ip.name}", lp)
    classes = _read_classes_txt(root)
    if classes is None and "fashion" in str(root.resolve()).lower():
        classes = list(FASHION_MNIST_CLASSES)
    return images, int_labels(labels, lp), classes, str(ip)
