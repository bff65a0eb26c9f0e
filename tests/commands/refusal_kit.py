"""What the refusal corpus shares: bad files built in a work dir, how a run is invoked, the one assertion.

A refusal (README "Exit codes", issue 17) is: the promised exit code, a last stderr line that is one
error line naming the file or flag at fault and the cause, no traceback anywhere, nothing written (no
output, report, checkpoint or `.NAME.*.tmp` temp file) and every input byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.cli import main
from tests.helpers_onnx import sha256, tiny_convnet

#: Files larger than this are compared by size and mtime, not hashed (the sparse 2 GB model).
_HASH_LIMIT = 64 * 2**20
#: An error line: the tool's own ("agmc-onnx: error: ...") or click's usage error ("Error: ...").
_ERROR_LINE = re.compile(r"^(agmc-onnx: error: |Error: )")
_TRACEBACK = ("Traceback (most recent call last)", 'File "')


# ----------------------------------------------------------------------------------------------- models

def _replace_init(model: onnx.ModelProto, name: str, array: np.ndarray) -> onnx.ModelProto:
    """A copy of `model` with initializer `name` replaced by `array` (float32)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.name == name:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(array, np.float32), name))
    return out


def mismatched_weights() -> onnx.ModelProto:
    """The tiny net with an 8x5x3x3 first Conv weight on its 3-channel input: passes onnx's plain checker."""
    return _replace_init(tiny_convnet(), "w1", np.full((8, 5, 3, 3), 0.1))


def nan_weight() -> onnx.ModelProto:
    """The tiny net with one NaN in the second Conv's weight."""
    w2 = numpy_helper.to_array(next(t for t in tiny_convnet().graph.initializer if t.name == "w2")).copy()
    w2[0, 0, 0, 0] = np.nan
    return _replace_init(tiny_convnet(), "w2", w2)


def custom_op() -> onnx.ModelProto:
    """The tiny net whose logits pass through `com.example.MyScale`, an op ONNX Runtime cannot run (its
    channels are frozen; the convs stay prunable)."""
    model = tiny_convnet()
    graph = model.graph
    graph.node[-1].output[0] = "raw_logits"
    graph.node.append(helper.make_node("MyScale", ["raw_logits"], ["logits"], name="scale", domain="com.example"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def int64_input() -> onnx.ModelProto:
    """The tiny net behind an int64 graph input (Cast to float first): not an image model for float data."""
    model = tiny_convnet()
    graph = model.graph
    graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    for node in graph.node:
        node.input[:] = ["input_f" if x == "input" else x for x in node.input]
    graph.node.insert(0, helper.make_node("Cast", ["input"], ["input_f"], name="cast", to=TensorProto.FLOAT))
    return model


def dynamic_spatial() -> onnx.ModelProto:
    """The tiny net with symbolic height and width: bench cannot make an input for it."""
    model = tiny_convnet()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return model


def save_external(model: onnx.ModelProto, path: Path) -> Path:
    """Save with every tensor in PATH.data (external data)."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)  # fmt: skip
    return path


def huge_external(path: Path) -> Path:
    """The tiny net plus a frozen 2 GiB MatMul weight (aux[N,1] x W[1,2^29] -> a graph output), the
    weight in a sparse external file: a 2 GB+ model that no plan can bring under 2 GB, made in no time."""
    model = tiny_convnet()
    k = 2**29
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1, k])
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", path.name + ".data"), ("offset", "0"), ("length", str(4 * k))):
        big.external_data.add(key=key, value=value)
    graph = model.graph
    graph.initializer.append(big)
    graph.input.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 1]))
    graph.output.append(helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", k]))
    graph.node.append(helper.make_node("MatMul", ["aux", "big"], ["emb"], name="embed"))
    onnx.save_model(model, str(path))
    with open(path.with_name(path.name + ".data"), "wb") as f:
        f.truncate(4 * k)  # sparse: 2 GiB of zeros without writing them
    return path


# ----------------------------------------------------------------------------------------------- data

def images(n: int, size: int = 8, channels: int = 3, seed: int = 0) -> np.ndarray:
    """n random uint8 images [n, size, size, channels] (the tiny net takes 3x8x8)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)


def npz(path: Path, classes: int = 4, train: int = 80, test: int | None = 40, channels: int = 3) -> Path:
    """An .npz data set with x_train/y_train (and x_test/y_test unless test is None), labels 0..classes-1."""
    arrays = {"x_train": images(train, channels=channels), "y_train": np.arange(train) % classes}
    if test is not None:
        arrays |= {"x_test": images(test, channels=channels, seed=1), "y_test": np.arange(test) % classes}
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class Outcome:
    """How a CLI run ended: exit code, the two streams, and an exception that escaped the CLI (in-process)."""

    code: int
    stdout: str
    stderr: str
    escaped: BaseException | None = None

    def tail(self, n: int = 4) -> str:
        """The last n stderr lines, for failure messages."""
        return "\n".join(self.stderr.rstrip().splitlines()[-n:])


def invoke(args: Sequence[str], cwd: Path) -> Outcome:
    """Run the CLI in-process (click's CliRunner) from `cwd`."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    finally:
        os.chdir(old)
    exc = result.exception
    escaped = None if exc is None or isinstance(exc, SystemExit) else exc
    return Outcome(result.exit_code, result.stdout, result.stderr, escaped)


def cli_command(*args: str) -> list[str]:
    """The argv of a real `agmc-onnx` process (this interpreter, PYTHONPATH inherited)."""
    return [sys.executable, "-m", "agmc_onnx.cli", *args]


def run_process(argv: Sequence[str], cwd: Path, timeout: float = 600, **kw: object) -> Outcome:
    """Run a real process to the end."""
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
                          **kw)  # type: ignore[call-overload]  # fmt: skip
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# ----------------------------------------------------------------------------------------------- the assertion

def snapshot(root: Path) -> dict[str, str]:
    """Every file, directory and link under root: file hashes (size+mtime above 64 MB), 'dir', link targets."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                st = p.stat()
                out[rel] = sha256(p) if st.st_size <= _HASH_LIMIT else f"{st.st_size} bytes, mtime {st.st_mtime_ns}"
    return out


def tree_changes(before: dict[str, str], after: dict[str, str]) -> str:
    """'' when nothing changed, else what was added, removed or changed (temp files first)."""
    added = sorted(set(after) - set(before), key=lambda k: (not k.endswith(".tmp"), k))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [f"{label}: {names}" for label, names in (("added", added), ("removed", removed), ("changed", changed))
             if names]  # fmt: skip
    return "; ".join(parts)


def refusal_problems(out: Outcome, code: int, names: Sequence[str], words: Sequence[str],
                     before: dict[str, str], root: Path) -> list[str]:  # fmt: skip
    """Every way `out` breaks the refusal contract (see assert_refused); [] when it keeps it."""
    problems = []
    if out.escaped is not None:
        problems.append(f"an exception escaped the CLI (a traceback for the user): {type(out.escaped).__name__}: "
                        f"{str(out.escaped)[:300]}")  # fmt: skip
    if any(t in stream for stream in (out.stdout, out.stderr) for t in _TRACEBACK):
        problems.append("a traceback was printed")
    if out.code != code:
        problems.append(f"want exit {code}, got {out.code}")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    cause = last.lower()
    for n in names:  # the cause must be said in words, not just found in a file name ("empty.onnx")
        cause = cause.replace(n.lower(), "")
    if not _ERROR_LINE.match(last):
        problems.append(f"the last stderr line is not an error line: {last!r}")
    elif not any(n in last for n in names):
        problems.append(f"the last line names none of {list(names)}: {last!r}")
    elif not any(w in cause for w in words):
        problems.append(f"the last line gives no cause among {list(words)}: {last!r}")
    changes = tree_changes(before, snapshot(root))
    if changes:
        problems.append(f"files changed: {changes}")
    return problems


def assert_refused(out: Outcome, code: int, names: Sequence[str], words: Sequence[str],
                   before: dict[str, str], root: Path) -> None:  # fmt: skip
    """The refusal contract: exit `code`; stderr's last line is one error line naming one of `names` (the
    file or flag at fault) and giving one of `words` (the cause, lower case, besides the names); no
    traceback; the tree under `root` (inputs and outputs alike) is exactly as it was."""
    problems = refusal_problems(out, code, names, words, before, root)
    assert not problems, "; ".join(problems) + f"\n(exit {out.code}; stderr ends:\n{out.tail()})"
