"""The `.npy` / `.npz` reader of unlabelled data: model input tensors, used as they are (one array per model
input, named after it when the model has several), or raw images that go through Preprocess.

An unnamed array (`x`, `x_train`/`x_test`, or the only array of the file) is taken as the model's input
tensor when it is floating point and its shape matches the input's (every fixed dimension after the
batch); anything else shaped like images ([N,H,W], [N,H,W,C] or [N,C,H,W]) is raw images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agmc_onnx.errors import InputError

_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 16: np.float32}  # onnx elem type -> numpy


@dataclass(frozen=True)
class InputInfo:
    """One graph input of a model: its name, shape (None where not fixed) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


def model_inputs(proto: Any) -> list[InputInfo]:
    """The model's data inputs (graph inputs that are not weights), in graph order."""
    from onnx import helper

    inits = {t.name for t in proto.graph.initializer}
    out = []
    for i in proto.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        elem = tt.elem_type
        dtype = np.dtype(_FLOAT_TYPES.get(elem) or helper.tensor_dtype_to_np_dtype(elem))
        out.append(InputInfo(i.name, dims, dtype))
    return out


def fixed_batch(proto: Any) -> int | None:
    """The batch size the model's first input fixes (static exports, e.g. Ultralytics' default: 1), None when free.
    Only 1 is supported: every run then feeds one example at a time."""
    from agmc_onnx.errors import InputError

    first = next(iter(model_inputs(proto)), None)
    batch = first.shape[0] if first is not None and first.shape else None
    if batch is not None and batch != 1:
        raise InputError(f"the model's input {first.name!r} fixes the batch size to {batch}; export it with a dynamic "
                         "batch (or batch 1)")
    return batch


@dataclass
class Arrays:
    """What an unlabelled array file holds for a split: input tensors (one per model input) or raw images."""

    tensors: tuple[np.ndarray, ...] | None
    images: np.ndarray | None
    source: str


def read_array_file(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz (by key) or the one array of an .npy (key ''); errors name the file."""
    try:
        if path.suffix.lower() == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise InputError(f"not a readable .{path.suffix.lower().lstrip('.')}: {exc}", path) from exc


def _shape(dims: tuple[int | None, ...]) -> str:
    """[N,3,640,640] with N where not fixed."""
    return "[" + ",".join("N" if i == 0 or d is None else str(d) for i, d in enumerate(dims)) + "]"


def fits_input(arr: np.ndarray, info: InputInfo) -> bool:
    """A float array shaped as the input (every fixed dimension after the batch equal)."""
    return (arr.dtype.kind == "f" and arr.ndim == len(info.shape)
            and all(d is None or d == a for d, a in zip(info.shape[1:], arr.shape[1:], strict=True)))  # fmt: skip


def check_tensor(arr: np.ndarray, info: InputInfo, path: Path, key: str) -> np.ndarray:
    """A named input tensor, dtype and shape checked against the model input; cast to its dtype."""
    want = info.dtype
    if arr.dtype.kind not in "uifb" or (want.kind == "f") != (arr.dtype.kind == "f"):
        raise InputError(f"array {key!r} is {arr.dtype}, the model input {info.name!r} takes {want} "
                         "(preprocessed tensors; give raw images as 'x' to have them preprocessed)", path)
    if arr.ndim != len(info.shape) or arr.ndim == 0 or not all(
            d is None or d == a for d, a in zip(info.shape[1:], arr.shape[1:], strict=True)):  # fmt: skip
        raise InputError(f"array {key!r} has shape {list(arr.shape)}, the model input {info.name!r} takes "
                         f"{_shape(info.shape)}", path)
    if arr.ndim == 0 or len(arr) == 0:
        raise InputError(f"array {key!r} holds no examples", path)
    return arr.astype(want, copy=False)


def image_array(x: np.ndarray, path: Path, key: str, expected: InputInfo | None = None) -> np.ndarray:
    """Raw images [N,H,W], [N,H,W,C] or [N,C,H,W] (C in 1/3/4) -> [N,H,W,C] view; errors name the file."""
    if x.dtype.kind not in "uif":
        raise InputError(f"array {key!r} must be numeric, got {x.dtype}", path)
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[3] in (1, 3, 4):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):
        return x.transpose(0, 2, 3, 1)
    tensor = "" if expected is None else f"the model input {expected.name!r} ({_shape(expected.shape)}, float) nor "
    raise InputError(f"array {key!r} has shape {list(x.shape)} ({x.dtype}): neither {tensor}images "
                     "[N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1/3/4", path)


def load_arrays(path: Path, split: str, inputs: list[InputInfo] | None, arrays: dict[str, np.ndarray] | None = None
                ) -> Arrays:  # fmt: skip
    """A split of an unlabelled .npy/.npz: input tensors by model input name, or one unnamed array (tensor or images)."""
    arrays = read_array_file(path) if arrays is None else arrays
    inputs = inputs or []
    names = [i.name for i in inputs]
    named = [k for k in arrays if k in names]
    have = sorted(k or "(the .npy array)" for k in arrays)
    if named:
        if split != "train":
            raise InputError(f"no {split} split (arrays named after the model inputs are one split)", path)
        missing = [n for n in names if n not in arrays]
        if missing:
            raise InputError(f"npz lacks model input {missing[0]!r} (has {have}; the model takes {names})", path)
        tensors = tuple(check_tensor(arrays[i.name], i, path, i.name) for i in inputs)
        if len({len(t) for t in tensors}) > 1:
            raise InputError(f"arrays hold different numbers of examples: {[len(t) for t in tensors]}", path)
        return Arrays(tensors, None, str(path))
    if len(inputs) > 1:
        raise InputError(f"the model has inputs {names}: give an .npz with one array per input, named after it "
                         f"(has {have})", path)
    key = f"x_{split}" if f"x_{split}" in arrays else "x" if split == "train" and "x" in arrays else None
    if key is None and split == "train" and len(arrays) == 1:
        key = next(iter(arrays))
    if key is None:
        if split == "train":
            raise InputError(f"which array holds the inputs? name it 'x' or after the model input (has {have})", path)
        raise InputError(f"no {split} split (no 'x_{split}' array)", path)
    x = arrays[key]
    label = key or "(the .npy array)"
    if x.ndim == 0 or len(x) == 0:
        raise InputError(f"array {label!r} holds no examples", path)
    if inputs and fits_input(x, inputs[0]):
        return Arrays((x.astype(inputs[0].dtype, copy=False),), None, str(path))
    return Arrays(None, image_array(x, path, label, inputs[0] if inputs else None), str(path))
