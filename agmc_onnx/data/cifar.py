"""The CIFAR-10/100 readers: python-pickle batches (numpy-only unpickler) and binary batches."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agmc_onnx.data.raw import Raw, int_labels, read_bytes
from agmc_onnx.errors import InputError


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes and numpy arrays only: a CIFAR batch cannot run code when loaded."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only whitelisted globals."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR python batch as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ...
        raise InputError(f"not a readable CIFAR python batch: {exc}", path) from exc
    if not isinstance(obj, dict):
        raise InputError("a CIFAR python batch must hold a dict", path)
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(values: Sequence[Any]) -> list[str]:
    """Decode byte strings."""
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(data: Any, path: Path) -> np.ndarray:
    """[N,3072] row-major CHW bytes -> [N,32,32,3] view."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise InputError(f"CIFAR data must be [N,3072], got {list(arr.shape)}", path)
    return arr.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_pickle_files(root: Path, split: str) -> tuple[list[Path], str, Path | None]:
    """Batch files, label key and meta file of a CIFAR-10 or CIFAR-100 python directory."""
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        files = sorted(root.glob("data_batch_[0-9]*")) if split == "train" else [root / "test_batch"]
        return [f for f in files if f.suffix == ""], "labels", root / "batches.meta"
    return [root / split], "fine_labels", root / "meta"


def load_cifar_pickle(root: Path, split: str) -> Raw:
    """CIFAR-10/100 python version."""
    files, key, meta = _cifar_pickle_files(root, split)
    if not files or not all(f.is_file() for f in files):
        raise InputError(f"CIFAR python {split} batch missing", files[0] if files else root)
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        if "data" not in d or key not in d:
            raise InputError(f"CIFAR batch lacks 'data' or '{key}' (has {sorted(d)})", f)
        x = _cifar_images(d["data"], f)
        y = np.asarray(d[key])
        if y.shape != (len(x),):
            raise InputError(f"{y.size} labels for {len(x)} images", f)
        xs.append(x)
        ys.append(int_labels(y, f))
    classes = None
    if meta is not None and meta.is_file():
        m = _unpickle(meta)
        names = m.get("label_names") if key == "labels" else m.get("fine_label_names")
        classes = _names(names) if names is not None else None
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return x, np.concatenate(ys), classes, str(files[0])


def load_cifar_binary(root: Path, split: str) -> Raw:
    """CIFAR-10 (1 label byte) / CIFAR-100 (coarse + fine label bytes) binary version."""
    if (root / "data_batch_1.bin").is_file() or (root / "test_batch.bin").is_file():
        files = sorted(root.glob("data_batch_*.bin")) if split == "train" else [root / "test_batch.bin"]
        label_bytes, meta = 1, root / "batches.meta.txt"
    else:
        files, label_bytes, meta = [root / f"{split}.bin"], 2, root / "fine_label_names.txt"
    xs, ys = [], []
    record = label_bytes + 3072
    for f in files:
        data = read_bytes(f)
        if not data or len(data) % record:
            raise InputError(f"size {len(data)} is not a multiple of the {record}-byte CIFAR record", f)
        rec = np.frombuffer(data, np.uint8).reshape(-1, record)
        xs.append(_cifar_images(rec[:, label_bytes:], f))
        ys.append(int_labels(rec[:, label_bytes - 1], f))
    classes = None
    if meta.is_file():
        classes = [ln.strip() for ln in meta.read_text(encoding="utf-8").splitlines() if ln.strip()] or None
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    return x, np.concatenate(ys), classes, str(files[0])
