"""Writing files safely: atomic (temp file + os.replace), never over the input."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.errors import InputError


def check_output_path(output: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Refuse an output equal to the input or in a directory we cannot write; return it as a Path."""
    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"output directory {parent} is not a directory", out)
        if not parent.exists():
            raise InputError(f"output directory {parent} does not exist", out)
        if source is not None:
            src = Path(source)
            same = out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src))
            if same:
                raise InputError("output path is the same file as the input; refusing to overwrite the input", out)
        if out.is_dir():
            raise InputError("output path is a directory", out)
        if not os.access(parent, os.W_OK):
            raise InputError(f"output directory {parent} is not writable (permission denied)", out)
    except OSError as exc:
        raise InputError(f"cannot write output ({exc.strerror or exc})", out) from exc
    return out


def _atomic_bytes(data: bytes, out: Path) -> None:
    """Write bytes to a temp file beside `out`, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent or "."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"cannot write ({exc.strerror or exc})", out) from exc


def write_model(proto: onnx.ModelProto, output: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Write a model atomically (inline weights; over 2 GB is refused)."""
    out = check_output_path(output, source)
    if proto.ByteSize() > 2**31 - 1:
        raise InputError("pruned model exceeds 2 GB; external-data output is not supported", out)
    _atomic_bytes(proto.SerializeToString(), out)
    return out


def write_json(data: Any, output: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Write JSON atomically."""
    out = check_output_path(output, source)
    _atomic_bytes((json.dumps(data, indent=2) + "\n").encode("utf-8"), out)
    return out
