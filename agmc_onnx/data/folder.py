"""The ImageFolder reader: one sub-folder per class, images read with Pillow and brought to one size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agmc_onnx.data.preprocess import Preprocess, resize_or_pad
from agmc_onnx.data.raw import Raw
from agmc_onnx.errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _image_folder_root(root: Path, split: str) -> Path:
    """`root/train` (or `root/test`, `root/val`) when present, else `root` itself holds the classes."""
    for name in (("train",) if split == "train" else ("test", "val")):
        if (root / name).is_dir():
            return root / name
    return root


def load_image_folder(root: Path, split: str, pre: Preprocess) -> Raw:
    """ImageFolder tree: class per sub-folder; images read with Pillow and brought to one size."""
    from PIL import Image, UnidentifiedImageError

    base = _image_folder_root(root, split)
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InputError("no class sub-folders (expected <root>/<class>/<image>)", base)
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise InputError(f"class folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})", d)
        files += [(p, label) for p in imgs]
    arrays: list[np.ndarray] = []
    mode = None if pre.channels is None else ("L" if pre.channels == 1 else "RGB")
    for p, _ in files:
        try:
            with Image.open(p) as im:
                im.load()
                m = mode or ("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
                arr = np.asarray(im.convert(m), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"unreadable image: {exc}", p) from exc
        arr = arr[..., None] if arr.ndim == 2 else arr
        if pre.size is not None and arr.shape[:2] != tuple(pre.size):
            arr = resize_or_pad(arr[None].astype(np.float32), pre.size[0], pre.size[1], pre.resize)[0]
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        arrays.append(arr)
    mode = mode or ("RGB" if any(a.shape[2] == 3 for a in arrays) else "L")
    if mode == "RGB":
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd = next(p for (p, _), a in zip(files, arrays, strict=True) if a.shape != arrays[0].shape)
        raise InputError(f"images differ in size ({sorted(s[:2] for s in shapes)[:3]}...) and the model "
                         "input size is unknown: give a size", odd)
    x = np.stack(arrays)
    y = np.fromiter((label for _, label in files), np.int64, len(files))
    return x, y, [d.name for d in class_dirs], str(base)
