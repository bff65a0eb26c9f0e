"""The `.npz` reader: arrays `x`/`y` (one split) or `x_train`/`y_train`/`x_test`/`y_test`, optional `classes`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agmc_onnx.data.arrays import image_array
from agmc_onnx.data.raw import Raw, int_labels
from agmc_onnx.errors import InputError


def load_npz(path: Path, split: str) -> Raw:
    """.npz with x/y (one split) or x_train/y_train/x_test/y_test; optional `classes`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk, yk = (f"x_{split}", f"y_{split}") if f"x_{split}" in keys else ("x", "y")
            if xk not in keys or yk not in keys:
                raise InputError(f"npz needs arrays 'x' and 'y' (or 'x_{split}'/'y_{split}'); has {sorted(keys)}",
                                 path)
            x, y = z[xk], z[yk]
            classes = [str(c) for c in z["classes"].tolist()] if "classes" in keys else None
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise InputError(f"not a readable .npz: {exc}", path) from exc
    if x.dtype.kind not in "uif":
        raise InputError(f"x must be numeric, got {x.dtype}", path)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D labels, got shape {list(y.shape)}", path)
    x = image_array(x, path, "x")
    if len(x) != len(y):
        raise InputError(f"{len(y)} labels for {len(x)} images", path)
    return x, int_labels(y, path), classes, str(path)
