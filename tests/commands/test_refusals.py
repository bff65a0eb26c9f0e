"""The refusal corpus (issue 17): bad model files, flags, paths, data, plans, checkpoints and policies given to
`inspect`, `prune`, `finetune` and `bench`. Each is answered with its exit code (2 bad input or usage, 1 a
failed run), one error line naming the file or flag and the cause, no traceback, nothing written and the
inputs unchanged (`refusal_kit.assert_refused`). tests/test_bad_input.py holds the earlier `prune` cases
(unreadable files, opsets, --target-flops values, output equal to the input); none is repeated here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch

from tests.commands.refusal_kit import (
    assert_refused,
    custom_op,
    dynamic_spatial,
    huge_external,
    int64_input,
    invoke,
    mismatched_weights,
    nan_weight,
    npz,
    save_external,
    snapshot,
)
from tests.helpers_onnx import tiny_convnet

Args = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    """One refusal: `args(dir)` builds the inputs in dir and returns the argv; what the answer must be."""

    args: Args
    names: tuple[str, ...]  # the last line names one of these: the file or flag at fault
    words: tuple[str, ...]  # ... and gives one of these causes (lower case)
    code: int = 2
    slow: bool = False


# ----------------------------------------------------------------------------------------------- building blocks

def model(d: Path, name: str = "m.onnx", proto: onnx.ModelProto | None = None) -> str:
    """Save `proto` (default: the tiny 4-class net, input 3x8x8) as d/name; return the name."""
    onnx.save_model(proto if proto is not None else tiny_convnet(), str(d / name))
    return name


def data(d: Path, name: str = "d.npz", **kw: int | None) -> str:
    """An .npz data set for the tiny net (refusal_kit.npz); return the name."""
    npz(d / name, **kw)  # type: ignore[arg-type]
    return name


def write(d: Path, name: str, content: str | bytes) -> str:
    """A file with the given content; return the name."""
    (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return name


def file_parent(d: Path, leaf: str) -> str:
    """A path under 'afile', which is a regular file."""
    (d / "afile").write_text("a file, not a directory\n")
    return f"afile/{leaf}"


def torch_file(d: Path, name: str, obj: object, cut: int | None = None) -> str:
    """torch.save(obj) as d/name, keeping only its first `cut` bytes when given (a truncated file)."""
    torch.save(obj, d / name)
    if cut is not None:
        (d / name).write_bytes((d / name).read_bytes()[:cut])
    return name


def checkpoint(d: Path, content: Callable[[Path], object]) -> None:
    """Put a search checkpoint for `-o out.onnx` in place (out.onnx.search/search.pt) made by `content`."""
    (d / "out.onnx.search").mkdir()
    content(d / "out.onnx.search")


PRUNE = ["--target-flops", "0.5", "--round-to", "1", "-o", "out.onnx", "--report", "r.json"]
UNIFORM = [*PRUNE, "--no-bench"]
SEARCH = [*UNIFORM, "--episodes", "2", "--reward-images", "20"]
FINETUNE = ["--epochs", "1", "--no-bench", "--no-progress", "-o", "ft.onnx"]


def prune(*extra: str, proto: onnx.ModelProto | None = None, with_data: bool = False, base: list[str] = UNIFORM) -> Args:
    """`prune m.onnx BASE EXTRA`, with the tiny net (or `proto`) and, when asked, --data d.npz and a 2-episode
    search on 20 images (EXTRA comes last, so its values win)."""

    def args(d: Path) -> list[str]:
        more = ["--data", data(d), "--episodes", "2", "--reward-images", "20"] if with_data else []
        return ["prune", model(d, proto=proto), *base, *more, *extra]

    return args


def finetune(*extra: str, proto: onnx.ModelProto | None = None) -> Args:
    """`finetune m.onnx --data d.npz FINETUNE EXTRA`."""
    return lambda d: ["finetune", model(d, proto=proto), "--data", data(d), *FINETUNE, *extra]


def bench(*extra: str, proto: onnx.ModelProto | None = None) -> Args:
    """`bench m.onnx --repeats 1 --warmup 0 --sessions 1 EXTRA`."""
    return lambda d: ["bench", model(d, proto=proto), "--repeats", "1", "--warmup", "0", "--sessions", "1", *extra]


BAD_VALUE = ("invalid", "must", "not in the range", "not a valid", "positive", "outside", "expected", "at least",
             "between", ">=", "out of range")  # fmt: skip
UNREADABLE = ("not a readable", "not an onnx", "empty", "pars", "truncat", "corrupt", "invalid")
NOT_DIR = ("not a directory", "is a file", "director")
MISSING_DATA = ("missing external data", "external data file")  # the tool's words, not onnx's
SAME = ("same", "overwrite", "input", "twice", "both")


# ----------------------------------------------------------------------------------------------- model files

def _dir(d: Path) -> str:
    (d / "dir.onnx").mkdir()
    return "dir.onnx"


def _json(d: Path) -> str:
    return write(d, "json.onnx", json.dumps({"graph": {"node": [{"op_type": "Conv"}]}, "ir_version": 8}))


def _truncated(d: Path) -> str:
    return write(d, "trunc.onnx", tiny_convnet().SerializeToString()[:300])


def _no_external(d: Path) -> str:
    save_external(tiny_convnet(), d / "ext.onnx")
    (d / "ext.onnx.data").unlink()
    return "ext.onnx"


MODEL_FILES: dict[str, Case] = {
    "inspect/missing": Case(lambda d: ["inspect", "nope.onnx"], ("nope.onnx",), ("no such", "not found", "not exist")),
    "bench/missing": Case(lambda d: ["bench", "nope.onnx"], ("nope.onnx",), ("no such", "not found", "not exist")),
    "finetune/missing": Case(lambda d: ["finetune", "nope.onnx", "--data", data(d), *FINETUNE], ("nope.onnx",),
                             ("no such", "not found", "not exist")),
    "inspect/directory": Case(lambda d: ["inspect", _dir(d)], ("dir.onnx",), ("director",)),
    "prune/directory": Case(lambda d: ["prune", _dir(d), *UNIFORM], ("dir.onnx",), ("director",)),
    "bench/directory": Case(lambda d: ["bench", _dir(d)], ("dir.onnx",), ("director",)),
    "bench/empty": Case(lambda d: ["bench", write(d, "empty.onnx", b"")], ("empty.onnx",), UNREADABLE),
    "finetune/empty": Case(lambda d: ["finetune", write(d, "empty.onnx", b""), "--data", data(d), *FINETUNE],
                           ("empty.onnx",), UNREADABLE),
    "bench/truncated": Case(lambda d: ["bench", _truncated(d)], ("trunc.onnx",), UNREADABLE),
    "inspect/json-renamed-onnx": Case(lambda d: ["inspect", _json(d)], ("json.onnx",), UNREADABLE + ("json",)),
    "prune/json-renamed-onnx": Case(lambda d: ["prune", _json(d), *UNIFORM], ("json.onnx",), UNREADABLE + ("json",)),
    "inspect/weights-do-not-fit": Case(lambda d: ["inspect", model(d, "w.onnx", mismatched_weights())], ("w.onnx",),
                                       ("shape", "channel", "w1", "does not fit", "mismatch", "incompatible")),
    "prune/weights-do-not-fit": Case(lambda d: ["prune", model(d, "w.onnx", mismatched_weights()), *PRUNE],
                                     ("w.onnx",), ("shape", "channel", "w1", "does not fit", "mismatch", "incompatible")),
    "bench/weights-do-not-fit": Case(lambda d: ["bench", model(d, "w.onnx", mismatched_weights())], ("w.onnx",),
                                     ("shape", "channel", "w1", "does not fit", "mismatch", "incompatible")),
    "prune/nan-weight": Case(lambda d: ["prune", model(d, "nan.onnx", nan_weight()), *UNIFORM], ("nan.onnx",),
                             ("nan", "finite")),
    "prune/custom-op-with-bench": Case(lambda d: ["prune", model(d, "op.onnx", custom_op()), *PRUNE], ("op.onnx",),
                                       ("myscale", "com.example", "custom", "onnx runtime cannot")),
    "bench/custom-op": Case(lambda d: ["bench", model(d, "op.onnx", custom_op())], ("op.onnx",),
                            ("myscale", "com.example", "custom", "onnx runtime cannot")),
    "prune/int64-input-with-data": Case(
        lambda d: ["prune", model(d, "int.onnx", int64_input()), *SEARCH, "--data", data(d)], ("int.onnx",),
        ("int64", "float", "type"),
    ),
    "bench/missing-external-data": Case(lambda d: ["bench", _no_external(d)], ("ext.onnx",), MISSING_DATA),
    "finetune/missing-external-data": Case(lambda d: ["finetune", _no_external(d), "--data", data(d), *FINETUNE],
                                           ("ext.onnx",), MISSING_DATA),
    "bench/dynamic-spatial-input": Case(lambda d: ["bench", model(d, "dyn.onnx", dynamic_spatial())], ("dyn.onnx",),
                                        ("symbolic", "dynamic", "shape")),
    "prune/2gb-model": Case(lambda d: ["prune", huge_external(d / "big.onnx").name, *UNIFORM], ("big.onnx",),
                            ("2 gb", "2gb", "2 gib", "too large", "over 2"), slow=True),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- flags

def _flag(command: Callable[..., Args], flag: str, value: str, *extra: str, **kw: bool) -> Case:
    """`command` with `flag value`: refused naming the flag."""
    return Case(command(*extra, flag, value, **kw), (flag,), BAD_VALUE)


FLAGS: dict[str, Case] = {
    "prune/--target-flops=abc": _flag(prune, "--target-flops", "abc"),
    "prune/--bench-batch=0": Case(prune("--bench-batch", "0", base=PRUNE), ("--bench-batch",), BAD_VALUE),
    "prune/--bench-batch=1,x": Case(prune("--bench-batch", "1,x", base=PRUNE), ("--bench-batch",), BAD_VALUE),
    "prune/--batch=0": _flag(prune, "--batch", "0", "--target-speedup", "1.5"),
    "prune/--bench-repeats=0": Case(prune("--bench-repeats", "0", base=PRUNE), ("--bench-repeats",), BAD_VALUE),
    "prune/--threads=0": _flag(prune, "--threads", "0"),
    "prune/--threads=abc": _flag(prune, "--threads", "abc"),
    "prune/--round-to=0": _flag(prune, "--round-to", "0"),
    "prune/--round-to=abc": _flag(prune, "--round-to", "abc"),
    "prune/--round-to=auto:0": _flag(prune, "--round-to", "auto:0"),
    "prune/--reward-images=-5": _flag(prune, "--reward-images", "-5", with_data=True),
    "prune/--reward-images=0": _flag(prune, "--reward-images", "0", with_data=True),
    "prune/--episodes=-1": _flag(prune, "--episodes", "-1", with_data=True),
    "prune/--episodes=abc": _flag(prune, "--episodes", "abc", with_data=True),
    "prune/--seed=-1": _flag(prune, "--seed", "-1", with_data=True),
    "prune/--target-latency=-1": _flag(prune, "--target-latency", "-1"),
    "prune/--target-speedup=0": _flag(prune, "--target-speedup", "0"),
    "prune/--target-speedup=abc": _flag(prune, "--target-speedup", "abc"),
    "prune/--latency-rounds=-1": _flag(prune, "--latency-rounds", "-1", "--target-speedup", "1.2"),
    "prune/--min-accuracy=150": Case(prune("--min-accuracy", "150", with_data=True), ("--min-accuracy",),
                                     BAD_VALUE + ("percentage", "in (")),
    "prune/--max-accuracy-drop=-1": _flag(prune, "--max-accuracy-drop", "-1", with_data=True),
    "prune/--min-speedup=-1": Case(prune("--min-speedup", "-1", base=PRUNE), ("--min-speedup",), BAD_VALUE),
    "prune/--max-latency-ms=0": Case(prune("--max-latency-ms", "0", base=PRUNE), ("--max-latency-ms",), BAD_VALUE),
    "finetune/--bench-batch=0": Case(lambda d: ["finetune", model(d), "--data", data(d), "--epochs", "1", "-o", "ft.onnx",
                                                "--bench-batch", "0"], ("--bench-batch",), BAD_VALUE),
    "finetune/--lr=-1": _flag(finetune, "--lr", "-1"),
    "finetune/--lr=0": _flag(finetune, "--lr", "0"),
    "finetune/--weight-decay=-1": _flag(finetune, "--weight-decay", "-1"),
    "finetune/--held-out=100000": _flag(finetune, "--held-out", "100000"),
    "finetune/--epochs=-1": _flag(finetune, "--epochs", "-1"),
    "finetune/--batch-size=0": _flag(finetune, "--batch-size", "0"),
    "finetune/--distill-alpha=2": _flag(finetune, "--distill-alpha", "2"),
    "finetune/--temperature=0": _flag(finetune, "--temperature", "0"),
    "finetune/--distill-features=-1": _flag(finetune, "--distill-features", "-1"),
    "prune/--color-jitter=-1": _flag(prune, "--color-jitter", "-1"),
    "prune/--feature-weight=-1": _flag(prune, "--feature-weight", "-1"),
    "finetune/--min-accuracy=-5": _flag(finetune, "--min-accuracy", "-5"),
    "bench/--batch=0": _flag(bench, "--batch", "0"),
    "bench/--batch=abc": _flag(bench, "--batch", "abc"),
    "bench/--batch=1,,-4": _flag(bench, "--batch", "1,,-4"),
    "bench/--threads=-1": _flag(bench, "--threads", "-1"),
    "bench/--repeats=0": _flag(bench, "--repeats", "0"),
    "bench/--sessions=0": _flag(bench, "--sessions", "0"),
    "bench/--warmup=-1": _flag(bench, "--warmup", "-1"),
    "bench/--profile=-1": _flag(bench, "--profile", "-1"),
}  # fmt: skip

NEEDS_DATA = ("--data", "data")
CONTRADICTIONS: dict[str, Case] = {
    "prune/--finetune-epochs-without-data": Case(prune("--finetune-epochs", "2"), ("--finetune-epochs",), NEEDS_DATA),
    "prune/--min-accuracy-without-data": Case(prune("--min-accuracy", "50"), ("--min-accuracy",), NEEDS_DATA),
    "prune/--max-accuracy-drop-without-data": Case(prune("--max-accuracy-drop", "1"), ("--max-accuracy-drop",),
                                                   NEEDS_DATA),
    "prune/--min-speedup-with-no-bench": Case(prune("--min-speedup", "1.2"), ("--min-speedup",),
                                              ("--no-bench", "bench", "measure")),
    "prune/--distill-without-finetune": Case(prune("--distill", with_data=True, base=["--strategy", "uniform", *UNIFORM]),
                                             ("--distill",), ("--finetune-epochs", "fine-tun")),
    "prune/--distill-features-without-finetune": Case(
        prune("--distill-features", "2", with_data=True, base=["--strategy", "uniform", *UNIFORM]),
        ("--distill-features",), ("--finetune-epochs", "fine-tun")),
    "prune/--feature-weight-without-features": Case(prune("--feature-weight", "0.1"), ("--feature-weight",),
                                                     ("--distill-features",)),
    "finetune/--distill-features-without-teacher": Case(finetune("--distill-features", "2"), ("--distill-features",),
                                                        ("--distill", "original")),
    "prune/--policy-with-uniform": Case(
        lambda d: ["prune", model(d), *UNIFORM, "--strategy", "uniform", "--policy", torch_file(d, "p.pt", {"kind": "agmc"})],
        ("--policy",), ("search", "--strategy", "uniform"),
    ),
    "prune/--resume-with-uniform": Case(prune("--resume", "--strategy", "uniform"), ("--resume",),
                                        ("search", "--strategy", "uniform")),
    "prune/--save-policy-with-random": Case(prune("--strategy", "random", "--save-policy", "p.pt", with_data=True),
                                            ("--save-policy",), ("random", "agent", "policy")),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- paths

def _symlink_to_input(d: Path) -> list[str]:
    os.symlink("m.onnx", d / "link.onnx")
    return ["prune", model(d), "--target-flops", "0.5", "--round-to", "1", "--no-bench", "-o", "link.onnx"]


PATHS: dict[str, Case] = {
    "prune/--latency-cache-under-a-file": Case(
        lambda d: ["prune", model(d), *UNIFORM, "--threads", "1", "--target-speedup", "1.2", "--latency-rounds", "0",
                   "--latency-cache", file_parent(d, "cache")], ("afile", "--latency-cache"), NOT_DIR),
    "prune/--report-equals--o": Case(lambda d: ["prune", model(d), *UNIFORM, "--report", "out.onnx"],
                                     ("--report", "out.onnx"), SAME + ("-o",)),
    "prune/-o-symlink-to-input": Case(_symlink_to_input, ("link.onnx", "m.onnx"), SAME),
    "prune/--report-equals-data": Case(prune("--report", "d.npz", with_data=True), ("d.npz", "--report"),
                                       SAME + ("data",)),
    "prune/--save-policy-equals-input": Case(prune("--save-policy", "m.onnx", with_data=True),
                                             ("m.onnx", "--save-policy"), SAME),
    "prune/-o-equals-plan": Case(lambda d: ["prune", model(d), "--plan", write(d, "plan.json", '{"0": 0.5}'),
                                            "--no-bench", "-o", "plan.json"], ("plan.json", "-o"), SAME + ("plan",)),
    "prune/--report-under-a-file": Case(lambda d: ["prune", model(d), *SEARCH, "--data", data(d), "--report",
                                                   file_parent(d, "r.json")], ("afile", "--report"), NOT_DIR),
    "prune/--checkpoint-under-a-file": Case(lambda d: ["prune", model(d), *SEARCH, "--data", data(d), "--checkpoint",
                                                       file_parent(d, "ck")], ("afile", "--checkpoint"), NOT_DIR),
    "prune/--save-policy-under-a-file": Case(lambda d: ["prune", model(d), *SEARCH, "--data", data(d), "--save-policy",
                                                        file_parent(d, "p.pt")], ("afile", "--save-policy"), NOT_DIR),
    "prune/-o-missing-dir-with-search": Case(lambda d: ["prune", model(d), *SEARCH, "--data", data(d), "-o",
                                                        "nodir/out.onnx"], ("nodir",), ("not exist", "no such", "missing")),
    "finetune/--report-under-a-file": Case(lambda d: ["finetune", model(d), "--data", data(d), *FINETUNE, "--report",
                                                      file_parent(d, "r.json")], ("afile", "--report"), NOT_DIR),
    "finetune/-o-missing-dir": Case(lambda d: ["finetune", model(d), "--data", data(d), *FINETUNE[:-2], "-o",
                                               "nodir/ft.onnx"], ("nodir",), ("not exist", "no such", "missing")),
    "finetune/-o-equals-input": Case(lambda d: ["finetune", model(d), "--data", data(d), *FINETUNE[:-2], "-o", "m.onnx"],
                                     ("m.onnx",), SAME),
    "finetune/-o-equals-distill-teacher": Case(
        lambda d: ["finetune", model(d), "--data", data(d), "--distill", model(d, "t.onnx"), *FINETUNE[:-2], "-o",
                   "t.onnx"], ("t.onnx", "--distill"), SAME + ("teacher", "distill"),
    ),
    "finetune/--report-equals-input": Case(finetune("--report", "m.onnx"), ("m.onnx", "--report"), SAME),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- data

def _empty_dir(d: Path) -> str:
    (d / "empty").mkdir()
    return "empty"


LABELS = ("label", "class")
DATA: dict[str, Case] = {
    "prune/--data-missing": Case(prune("--data", "nope", base=SEARCH), ("nope",), ("not exist", "not found", "no such")),
    "prune/--data-empty-dir": Case(lambda d: ["prune", model(d), *SEARCH, "--data", _empty_dir(d)], ("empty",),
                                   ("empty", "unrecognised", "no ")),
    "finetune/--data-empty-dir": Case(lambda d: ["finetune", model(d), "--data", _empty_dir(d), *FINETUNE], ("empty",),
                                      ("empty", "unrecognised", "no ")),
    # prune's --data is "train [+ test]" (README, --help): without a test split it works (see
    # test_prune_data_without_test_split_works) unless a gate needs test accuracy
    "prune/--min-accuracy-with-data-without-test-split": Case(
        lambda d: ["prune", model(d), *UNIFORM, "--strategy", "uniform", "--data", data(d, "nt.npz", test=None),
                   "--min-accuracy", "50"], ("nt.npz", "--min-accuracy"), ("test",)),
    "finetune/--data-without-test-split": Case(
        lambda d: ["finetune", model(d), "--data", data(d, "nt.npz", test=None), *FINETUNE], ("nt.npz",), ("test",)),
    "prune/labels-beyond-model-classes": Case(lambda d: ["prune", model(d), *SEARCH, "--data", data(d, "l.npz", classes=8)],
                                              ("l.npz",), LABELS),
    "finetune/labels-beyond-model-classes": Case(
        lambda d: ["finetune", model(d), "--data", data(d, "l.npz", classes=8), *FINETUNE], ("l.npz",), LABELS),
    "prune/data-with-2-channel-images": Case(
        lambda d: ["prune", model(d), *SEARCH, "--data", data(d, "c2.npz", channels=2)], ("c2.npz",), ("channel", "c in", "must be")),
    "prune/data-not-an-npz": Case(lambda d: ["prune", model(d), *SEARCH, "--data", write(d, "x.npz", "hello")],
                                  ("x.npz",), ("npz", "readable")),
    "finetune/--distill-corrupt": Case(lambda d: [*finetune()(d), "--distill", write(d, "t.onnx", b"garbage")],
                                       ("t.onnx",), UNREADABLE),
    "finetune/--original-corrupt": Case(lambda d: [*finetune()(d), "--original", write(d, "o.onnx", b"garbage")],
                                        ("o.onnx",), UNREADABLE),
    "finetune/data-train-split-empty": Case(
        lambda d: ["finetune", model(d), "--data", data(d, "e.npz", train=0), *FINETUNE], ("e.npz",), ("no examples", "empty")),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- plans

def _plan(content: str) -> Args:
    return lambda d: ["prune", model(d), "--plan", write(d, "plan.json", content), "--no-bench", "-o", "out.onnx",
                      "--report", "r.json"]


PLANS: dict[str, Case] = {
    "prune/--plan-missing": Case(lambda d: ["prune", model(d), "--plan", "plan.json", "--no-bench", "-o", "out.onnx"],
                                 ("plan.json",), ("not found", "no such", "not exist")),
    "prune/--plan-not-json": Case(_plan("{0: 0.5,"), ("plan.json",), ("json",)),
    "prune/--plan-unknown-group": Case(_plan('{"99": 0.5}'), ("plan.json",), ("group 99",)),
    "prune/--plan-frozen-group-indices": Case(_plan('{"2": [0, 1]}'), ("plan.json",), ("frozen",)),
    "prune/--plan-empty-kept-list": Case(_plan('{"0": []}'), ("plan.json",), ("no channel", "empty")),
    "prune/--plan-index-out-of-range": Case(_plan('{"0": [0, 99]}'), ("plan.json",), ("indices", "index", "99")),
    "prune/--plan-a-list": Case(_plan("[0.5, 0.5]"), ("plan.json",), ("object", "plan must")),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- checkpoints, policies

def _resume(content: Callable[[Path], object]) -> Args:
    """A 2-episode search resumed from a checkpoint that `content` writes."""

    def args(d: Path) -> list[str]:
        checkpoint(d, content)
        return ["prune", model(d), *SEARCH, "--data", data(d), "--resume"]

    return args


def _policy(content: Callable[[Path], str]) -> Args:
    """A 2-episode agmc search warm-started from the policy file that `content` writes."""
    return lambda d: ["prune", model(d), *SEARCH, "--data", data(d), "--policy", content(d)]


CKPT = ("checkpoint", "search.pt", "out.onnx.search")
UNREADABLE_CKPT = ("cannot read", "corrupt", "truncat", "not a", "unreadable", "another search", "foreign")
STATE = {"fingerprint": {"strategy": "agmc"}, "next_episode": 1}
STATES: dict[str, Case] = {
    "prune/--resume-corrupt-checkpoint": Case(_resume(lambda c: write(c, "search.pt", b"\x80garbage" * 64)), CKPT,
                                              UNREADABLE_CKPT),
    "prune/--resume-truncated-checkpoint": Case(_resume(lambda c: torch_file(c, "search.pt", STATE, cut=100)), CKPT,
                                                UNREADABLE_CKPT),
    "prune/--resume-foreign-checkpoint": Case(_resume(lambda c: torch_file(c, "search.pt", {"weights": [1, 2]})), CKPT,
                                              UNREADABLE_CKPT),
    "prune/--policy-corrupt": Case(_policy(lambda d: write(d, "p.pt", b"\x80garbage" * 64)), ("p.pt",),
                                   ("cannot read", "corrupt", "not a")),
    "prune/--policy-truncated": Case(_policy(lambda d: torch_file(d, "p.pt", {"kind": "agmc"}, cut=100)), ("p.pt",),
                                     ("cannot read", "corrupt", "truncat")),
    "prune/--policy-of-another-strategy": Case(_policy(lambda d: torch_file(d, "p.pt", {"kind": "amc"})), ("p.pt",),
                                               ("amc",)),
    "prune/--policy-of-another-agent": Case(
        _policy(lambda d: torch_file(d, "p.pt", {"kind": "agmc", "agent": "ppo", "decoder": "groups", "source": {}})),
        ("p.pt",), ("ppo",)),
    "prune/--policy-not-a-policy": Case(_policy(lambda d: torch_file(d, "p.pt", [1, 2, 3])), ("p.pt",),
                                        ("policy", "list")),
}  # fmt: skip

CASES: dict[str, Case] = {**MODEL_FILES, **FLAGS, **CONTRADICTIONS, **PATHS, **DATA, **PLANS, **STATES}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if c.slow else []) for n, c in CASES.items()]
)
def test_refused(tmp_path: Path, name: str) -> None:
    """Each bad input is refused per the contract of refusal_kit.assert_refused."""
    case = CASES[name]
    args = case.args(tmp_path)
    before = snapshot(tmp_path)
    out = invoke(args, tmp_path)
    assert_refused(out, case.code, case.names, case.words, before, tmp_path)


def test_prune_data_without_test_split_works(tmp_path: Path) -> None:
    """`prune --data` takes train [+ test] (README): a train-only set prunes, the report has no test accuracy."""
    args = ["prune", model(tmp_path), *UNIFORM, "--strategy", "uniform", "--data", data(tmp_path, "nt.npz", test=None)]
    out = invoke(args, tmp_path)
    assert out.code == 0 and out.escaped is None, out.tail()
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["models"]["pruned"]["accuracy"] is None and rep["accuracy"]["test"] is None
    assert rep["accuracy"]["reward_split"]["images"] > 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")), full_check=True)
