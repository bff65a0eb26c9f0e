"""The ImageFolder reader (one sub-folder per class) and what image readers share: Pillow reads brought to one size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agmc_onnx.data.preprocess import Preprocess, pad_fill, resize_or_pad
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
    base = _image_folder_root(root, split)
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InputError("no class sub-folders (expected <root>/<class>/<image>)", base)
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        imgs = image_files(d)
        if not imgs:
            raise InputError(f"class folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})", d)
        files += [(p, label) for p in imgs]
    x = read_images([p for p, _ in files], pre)
    y = np.fromiter((label for _, label in files), np.int64, len(files))
    return x, y, [d.name for d in class_dirs], str(base)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_images(files: list[Path], pre: Preprocess) -> np.ndarray:
    """Images read with Pillow as uint8 [N,H,W,C], each brought to `pre.size` (resize, pad or letterbox);
    an unreadable file, or sizes that differ with no size to bring them to, is an error naming the file."""
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    mode = None if pre.channels is None else ("L" if pre.channels == 1 else "RGB")
    fill = pad_fill(np.dtype(np.uint8), pre.resize)
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                m = mode or ("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
                arr = np.asarray(im.convert(m), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"unreadable image: {exc}", p) from exc
        arr = arr[..., None] if arr.ndim == 2 else arr
        if pre.size is not None and arr.shape[:2] != tuple(pre.size):
            arr = resize_or_pad(arr[None].astype(np.float32), pre.size[0], pre.size[1], pre.resize, fill)[0]
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        arrays.append(arr)
    mode = mode or ("RGB" if any(a.shape[2] == 3 for a in arrays) else "L")
    if mode == "RGB":
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd = next(p for p, a in zip(files, arrays, strict=True) if a.shape != arrays[0].shape)
        raise InputError(f"images differ in size ({sorted(s[:2] for s in shapes)[:3]}...) and the model "
                         "input size is unknown: give a size", odd)
    return np.stack(arrays)
