"""Loading a split: format detection, the reader for it, label checks and preprocessing; the shipped data.

Labelled formats: IDX, CIFAR, ImageFolder, `.npz` with `x` and `y`. With `labels=False` (a run that
needs no labels) also: a flat folder of images (a folder of video frames is one), an `.npy`, an `.npz`
without labels (model input tensors by input name, or raw images); labels are still returned when the
data has them, so a labelled set can be used without its labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agmc_onnx.data.arrays import InputInfo, load_arrays, read_array_file
from agmc_onnx.data.cifar import load_cifar_binary, load_cifar_pickle
from agmc_onnx.data.dataset import Dataset
from agmc_onnx.data.flat import is_flat_folder, load_flat_folder
from agmc_onnx.data.folder import load_image_folder
from agmc_onnx.data.idx import load_idx
from agmc_onnx.data.npz import load_npz
from agmc_onnx.data.preprocess import Preprocess
from agmc_onnx.data.raw import PathLike
from agmc_onnx.errors import InputError

#: The shipped class-balanced subset (10k train + 2k test) in a source checkout.
SHIPPED_FASHION_MNIST = Path(__file__).resolve().parents[2] / "fixtures" / "data"
#: Where Debian's `dataset-fashion-mnist` puts the full set.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")


def detect_format(path: PathLike) -> str:
    """'npz', 'npy', 'idx', 'cifar-pickle', 'cifar-binary', 'imagefolder' or 'images' (a flat folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError("dataset path not found", p)
    if p.is_file():
        if p.suffix.lower() in (".npz", ".npy"):
            return p.suffix.lower()[1:]
        raise InputError("a dataset file must be an .npz or .npy; IDX, CIFAR, ImageFolder and image folders "
                         "are directories", p)
    names = {q.name for q in p.iterdir()}
    if any("-idx" in n and "-ubyte" in n for n in names):
        return "idx"
    if names & {"data_batch_1", "test_batch"} or {"train", "meta"} <= names and (p / "meta").is_file():
        return "cifar-pickle"
    if names & {"data_batch_1.bin", "test_batch.bin", "train.bin", "test.bin"}:
        return "cifar-binary"
    if is_flat_folder(p):
        return "images"
    if any((p / n).is_dir() for n in names):
        return "imagefolder"
    raise InputError("empty or unrecognised dataset directory (expected images, class sub-folders, IDX or "
                     "CIFAR batches, or give an .npz/.npy)", p)


def load_dataset(path: PathLike, split: str = "train", preprocess: Preprocess | None = None, *,
                 num_classes: int | None = None, limit: int | None = None, fmt: str | None = None,
                 labels: bool = True, inputs: list[InputInfo] | None = None) -> Dataset:
    """Load one split of an image set and preprocess it for a model.

    `num_classes` (e.g. the model's number of logits) bounds the labels; `limit` keeps the first N
    examples; `fmt` overrides format detection. With `labels=False` unlabelled data is accepted too
    (module docstring); `inputs` (the model's, `model_inputs`) tells input tensors from raw images.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    pre = preprocess or Preprocess()
    p = Path(path)
    fmt = fmt or detect_format(p)
    if not labels:
        unlabelled = _load_unlabelled(p, fmt, split, pre, inputs, limit)
        if unlabelled is not None:
            return unlabelled
    elif fmt in ("images", "npy"):
        raise InputError(f"{'a flat image folder' if fmt == 'images' else 'an .npy'} has no labels; this needs "
                         "labelled data (class sub-folders, IDX, CIFAR or an .npz with 'x' and 'y')", p)
    loaders = {"idx": load_idx, "cifar-pickle": load_cifar_pickle, "cifar-binary": load_cifar_binary,
               "npz": load_npz}
    if fmt == "imagefolder":
        raw, y, classes, source = load_image_folder(p, split, pre)
    elif fmt in loaders:
        raw, y, classes, source = loaders[fmt](p, split)
    else:
        raise InputError(f"unknown dataset format {fmt!r}", p)
    if len(y) == 0:
        raise InputError(f"the {split} split has no examples", source)
    if limit is not None:
        raw, y = raw[:limit], y[:limit]
    n_cls = num_classes or (len(classes) if classes else int(y.max()) + 1)
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise InputError(f"data has {len(classes)} classes but the model has {num_classes} outputs", source)
    if int(y.max()) >= n_cls:
        bad = int(np.flatnonzero(y >= n_cls)[0])
        raise InputError(f"label {int(y[bad])} at index {bad} is out of range for {n_cls} classes", source)
    if classes is None:
        classes = [str(i) for i in range(n_cls)]
    x = pre.apply(raw, source)
    return Dataset(x=x, y=y, classes=list(classes), layout=pre.layout, source=source)


def _load_unlabelled(p: Path, fmt: str, split: str, pre: Preprocess, inputs: list[InputInfo] | None,
                     limit: int | None) -> Dataset | None:  # fmt: skip
    """A split of a format that may have no labels (flat folder, .npy, .npz without `y`), None for the others."""
    if fmt == "images":
        raw, source = load_flat_folder(p, split, pre)
    elif fmt in ("npy", "npz"):
        arrays = read_array_file(p)
        if fmt == "npz" and ({"y", f"y_{split}"} & set(arrays)):
            return None  # labelled: the npz reader
        found = load_arrays(p, split, inputs, arrays)
        source = found.source
        if found.tensors is not None:
            xs = [t[:limit] for t in found.tensors] if limit is not None else list(found.tensors)
            return Dataset(x=xs[0], y=None, classes=[], layout=pre.layout, source=source, extra=tuple(xs[1:]))
        raw = found.images
    else:
        return None
    if limit is not None:
        raw = raw[:limit]
    return Dataset(x=pre.apply(raw, source), y=None, classes=[], layout=pre.layout, source=source)


def fashion_mnist_dir(full: bool = False) -> Path:
    """The shipped subset; with `full`, the system copy of the whole set when installed."""
    if full and SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    if not SHIPPED_FASHION_MNIST.is_dir():
        raise InputError("shipped Fashion-MNIST subset not found (a source checkout has it)", SHIPPED_FASHION_MNIST)
    return SHIPPED_FASHION_MNIST
