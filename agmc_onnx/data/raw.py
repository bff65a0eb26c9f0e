"""What every dataset reader returns, and what the readers share: file bytes (gzipped or raw), integer labels."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from agmc_onnx.errors import InputError

PathLike = str | os.PathLike[str]
#: A reader's result: raw images [N,H,W,C] (uint8 or float), int64 labels, class names when the data
#: names them, and the file the examples came from (named in errors).
Raw = tuple[np.ndarray, np.ndarray, list[str] | None, str]


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in .gz; errors name the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read file: {exc}", path) from exc


def int_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels as int64, non-negative; errors name the file."""
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError("labels must be integers", path)
    elif y.dtype.kind not in "ui":
        raise InputError(f"labels must be integers, got {y.dtype}", path)
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise InputError(f"negative label {int(y.min())}", path)
    return y
