"""The flat image-folder reader: unlabelled images straight in a folder (no class sub-folders); a folder of
video frames is one. `root/train` and `root/test` (or `root/val`) hold the splits when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agmc_onnx.data.folder import IMAGE_EXTENSIONS, image_files, read_images
from agmc_onnx.data.preprocess import Preprocess
from agmc_onnx.errors import InputError


def holds_images(folder: Path) -> bool:
    """True when image files lie directly in `folder`."""
    return folder.is_dir() and bool(image_files(folder))


def is_flat_folder(root: Path) -> bool:
    """Images directly in `root`, or in a flat `root/train`: not class sub-folders."""
    return holds_images(root) or holds_images(root / "train")


def flat_split_folder(root: Path, split: str) -> Path:
    """The folder holding a split's images: `root/train` (else `root`) for train, `root/test` or `root/val` for test."""
    names = ("train",) if split == "train" else ("test", "val")
    for name in names:
        if holds_images(root / name):
            return root / name
    if split == "train" and holds_images(root):
        return root
    raise InputError(f"no {split} images (a flat folder's {split} split is "
                     f"{' or '.join(f'{root / n}/' for n in names)}{' or the folder itself' if split == 'train' else ''})",
                     root)  # fmt: skip


def load_flat_folder(root: Path, split: str, pre: Preprocess) -> tuple[np.ndarray, str]:
    """Raw uint8 images [N,H,W,C] of a split of a flat folder (sorted by file name) and the folder they came from."""
    folder = flat_split_folder(root, split)
    files = image_files(folder)
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))})", folder)
    return read_images(files, pre), str(folder)
