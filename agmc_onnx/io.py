"""Writing files safely, the one writer for models, reports, plots, policies and caches.

Every file is written to a temp file beside it with the umask's mode, then renamed over its path; the
temp file is removed on every exit Python sees (errors, Ctrl-C, SIGTERM handled by the CLI). Inside
`staged(paths)` the files a run writes to those paths are held as temp files and renamed together at
the end (under a lock on their directories, so two runs writing the same outputs do not mix them), or
removed when the run fails: a run that does not succeed leaves no output. `check_outputs` refuses, up
front, outputs that cannot be written or that would overwrite an input or each other.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.errors import AgmcError, InputError

PathLike = str | os.PathLike[str]


def check_output_path(output: PathLike, source: PathLike | None = None) -> Path:
    """Refuse an output equal to the input or in a directory we cannot write; return it as a Path."""
    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"output directory {parent} is not a directory", out)
        if not parent.exists():
            raise InputError(f"output directory {parent} does not exist", out)
        if source is not None and same_file(out, source):
            raise InputError("output path is the same file as the input; refusing to overwrite the input", out)
        if out.is_dir():
            raise InputError("output path is a directory", out)
        if not os.access(parent, os.W_OK):
            raise InputError(f"output directory {parent} is not writable (permission denied)", out)
    except OSError as exc:
        raise InputError(f"cannot write output ({exc.strerror or exc})", out) from exc
    return out


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when two paths name one file (symlinks and other spellings resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- up-front checks

@dataclass(frozen=True)
class Output:
    """A path a run will write: `flag` names it in messages (-o, --report, ...); `directory` for dir outputs."""

    flag: str
    path: Path
    directory: bool = False


@dataclass(frozen=True)
class Input:
    """A path a run reads: `flag` names it in messages (the input model, --data, --plan, ...)."""

    flag: str
    path: Path


def check_outputs(outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
    """Every output writable where it is (its directory exists; a directory output's first existing ancestor
    is a directory), not an input, not inside a directory input, and no two outputs the same path."""
    for out in outputs:
        _check_writable(out)
        for src in inputs:
            inside = src.path.is_dir() and _inside(out.path, src.path)
            if same_file(out.path, src.path) or inside:
                where = "inside" if inside and not same_file(out.path, src.path) else "the same file as"
                raise InputError(f"{out.flag} {out.path} is {where} {src.flag} {src.path}; refusing to overwrite an input")
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            if same_file(a.path, b.path):
                raise InputError(f"{b.flag} {b.path} is the same file as {a.flag} {a.path}: each output needs its own path")


def _inside(path: Path, folder: Path) -> bool:
    """True when `path` lies under the directory `folder` (resolved)."""
    return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents


def _check_writable(out: Output) -> None:
    """Refuse an output that cannot be written where it is: naming the flag, the path and why."""
    p = out.path
    if out.directory:
        if p.exists() and not p.is_dir():
            raise InputError(f"{out.flag} {p}: is a file, not a directory")
    elif p.is_dir():
        raise InputError(f"{out.flag} {p}: is a directory; give a file name")
    parent = p.parent
    while not parent.exists():
        if not out.directory:
            raise InputError(f"{out.flag} {p}: directory {parent} does not exist")
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{out.flag} {p}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out.flag} {p}: directory {parent} is not writable (permission denied)")


# ----------------------------------------------------------------------------------------------- the writer

def _umask() -> int:
    """The process umask (read from /proc without changing it; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(out: Path, data: bytes) -> str:
    """A complete temp file `.NAME.XXXX.tmp` beside `out` holding `data`, with the umask's mode; removed on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent) or ".")
    with _removed_on_failure(tmp, out):
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return tmp


@contextlib.contextmanager
def _removed_on_failure(tmp: str, out: Path) -> Iterator[None]:
    """Remove the temp file `tmp` when the block fails; an OSError becomes one AgmcError naming `out`."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise AgmcError(f"cannot write ({exc.strerror or exc})", out) from exc
        raise


def write_bytes(data: bytes, output: PathLike) -> Path:
    """Write bytes to `output` atomically (staged when a run stages that path); returns the path."""
    out = Path(output)
    stage = _STAGE.get()
    if stage is not None and stage.covers(out):
        stage.put(out, data)
        return out
    tmp = _temp_beside(out, data)
    with _removed_on_failure(tmp, out):
        os.replace(tmp, out)
    return out


def write_text(text: str, output: PathLike) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(text.encode("utf-8"), output)


def write_model(proto: onnx.ModelProto, output: PathLike, source: PathLike | None = None) -> Path:
    """Write a model atomically (inline weights; over 2 GB is refused)."""
    out = check_output_path(output, source)
    if proto.ByteSize() > 2**31 - 1:
        raise InputError("pruned model exceeds 2 GB; external-data output is not supported", out)
    return write_bytes(proto.SerializeToString(), out)


def write_json(data: Any, output: PathLike, source: PathLike | None = None) -> Path:
    """Write JSON atomically."""
    out = check_output_path(output, source)
    return write_text(json.dumps(data, indent=2) + "\n", out)


# ----------------------------------------------------------------------------------------------- staging

class Staged:
    """A run's outputs held as temp files until `commit` renames them all (or `discard` removes them)."""

    def __init__(self, paths: Iterable[PathLike]) -> None:
        self.paths = {os.path.abspath(p) for p in paths}
        self.temps: dict[str, str] = {}  # output (abspath) -> its complete temp file

    def covers(self, out: PathLike) -> bool:
        """True when `out` is one of the staged outputs."""
        return os.path.abspath(out) in self.paths

    def put(self, out: Path, data: bytes) -> None:
        """Hold `data` for `out` in a temp file beside it (replacing what was held before)."""
        key = os.path.abspath(out)
        tmp = _temp_beside(out, data)
        old = self.temps.get(key)
        self.temps[key] = tmp
        if old is not None:
            with contextlib.suppress(OSError):
                os.unlink(old)

    def file(self, out: PathLike) -> Path:
        """Where `out`'s bytes are now: its temp file while staged, else the path itself (to read them back)."""
        return Path(self.temps.get(os.path.abspath(out), out))

    def commit(self) -> None:
        """Rename every temp file onto its output, under a lock on their directories; on any failure the
        outputs renamed so far are removed too (the run did not succeed)."""
        done: list[str] = []
        with _locked({os.path.dirname(k) for k in self.temps}):
            try:
                for out, tmp in list(self.temps.items()):
                    os.replace(tmp, out)
                    done.append(out)
                    del self.temps[out]
            except BaseException as exc:
                for out in done:
                    with contextlib.suppress(OSError):
                        os.unlink(out)
                self.discard()
                if isinstance(exc, OSError):
                    raise AgmcError(f"cannot write ({exc.strerror or exc})", exc.filename) from exc
                raise

    def discard(self) -> None:
        """Remove every temp file still held."""
        for tmp in self.temps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.temps.clear()


_STAGE: contextvars.ContextVar[Staged | None] = contextvars.ContextVar("agmc_onnx_stage", default=None)


@contextlib.contextmanager
def staged(paths: Iterable[PathLike]) -> Iterator[Staged]:
    """Stage writes to `paths` for the block: committed together when it ends normally, removed when it raises."""
    stage = Staged(paths)
    token = _STAGE.set(stage)
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.discard()
        raise
    finally:
        _STAGE.reset(token)


def staged_file(out: PathLike) -> Path:
    """Where `out`'s bytes are now inside a `staged` block (its temp file), else `out`."""
    stage = _STAGE.get()
    return stage.file(out) if stage is not None else Path(out)


@contextlib.contextmanager
def _locked(folders: Iterable[str]) -> Iterator[None]:
    """Hold an exclusive flock on each folder (sorted, so two runs take them in one order); best effort."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    fds = []
    try:
        for folder in sorted(folders):
            try:
                fd = os.open(folder or ".", os.O_RDONLY)
            except OSError:
                continue
            fds.append(fd)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock
