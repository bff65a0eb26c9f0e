"""agmc_onnx.io: the one writer (atomic, the umask's mode, no temp file left), staged outputs, up-front path checks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agmc_onnx import io
from agmc_onnx.errors import InputError
from agmc_onnx.io import Input, Output, check_outputs


@pytest.fixture
def umask027() -> Iterator[None]:
    """Run the test under umask 027, then restore the old one."""
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_written_file_gets_the_umask_mode(tmp_path: Path, umask027: None) -> None:
    """0666 & ~umask, like any tool's output (mkstemp alone gives 0600)."""
    out = io.write_text("hello\n", tmp_path / "a.txt")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.read_text() == "hello\n" and _files(tmp_path) == ["a.txt"]


def test_interrupted_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the complete temp file is renamed: the temp file is removed, the old file kept."""
    (tmp_path / "a.txt").write_text("old")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.write_text("new", tmp_path / "a.txt")
    assert _files(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_staged_outputs_appear_together_at_the_end(tmp_path: Path) -> None:
    """Inside `staged`, files exist only as temp files (readable through staged_file) until the block ends."""
    a, b, other = tmp_path / "a.onnx", tmp_path / "a.json", tmp_path / "cache.json"
    with io.staged([a, b]):
        io.write_text("model", a)
        io.write_text("cache", other)  # not staged: written at once (checkpoints and caches outlive a run)
        assert not a.exists() and other.exists()
        assert io.staged_file(a).read_text() == "model" and io.staged_file(a).name.startswith(".a.onnx.")
        io.write_text("report", b)
    assert a.read_text() == "model" and b.read_text() == "report"
    assert _files(tmp_path) == ["a.json", "a.onnx", "cache.json"]


def test_a_failed_run_leaves_no_output_and_keeps_the_old_file(tmp_path: Path) -> None:
    """An exception inside `staged`: nothing written, no temp file, an older file at the path untouched."""
    a, b = tmp_path / "a.onnx", tmp_path / "a.json"
    a.write_text("from an earlier run")
    with pytest.raises(RuntimeError), io.staged([a, b]):
        io.write_text("new model", a)
        io.write_text("report", b)
        raise RuntimeError("the self-check failed")
    assert _files(tmp_path) == ["a.onnx"] and a.read_text() == "from an earlier run"


def test_an_interrupted_commit_removes_what_it_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal between two renames of the commit: the first output is removed again, the temps too."""
    a, b = tmp_path / "a.onnx", tmp_path / "a.json"
    real = os.replace
    calls: list[str] = []

    def second_interrupted(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", second_interrupted)
    with pytest.raises(KeyboardInterrupt), io.staged([a, b]):
        io.write_text("model", a)
        io.write_text("report", b)
    assert len(calls) == 2 and _files(tmp_path) == []


def test_same_file_sees_through_symlinks_and_spellings(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_text("x")
    os.symlink("m.onnx", tmp_path / "link.onnx")
    assert io.same_file(tmp_path / "link.onnx", tmp_path / "m.onnx")
    assert io.same_file(tmp_path / "." / "m.onnx", tmp_path / "m.onnx")
    assert not io.same_file(tmp_path / "n.onnx", tmp_path / "m.onnx")


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        ([Output("-o", Path("m.onnx"))], r"-o m.onnx is the same file as the input model"),
        ([Output("--report", Path("data/r.json"))], r"--report data/r.json is inside --data data"),
        ([Output("-o", Path("o.onnx")), Output("--report", Path("o.onnx"))], r"--report o.onnx is the same file as -o"),
        ([Output("--report", Path("afile/r.json"))], r"afile is a file, not a directory"),
        ([Output("--checkpoint", Path("afile/ck"), directory=True)], r"afile is a file, not a directory"),
        ([Output("--checkpoint", Path("afile"), directory=True)], r"--checkpoint afile: is a file, not a directory"),
        ([Output("-o", Path("nodir/o.onnx"))], r"directory nodir does not exist"),
        ([Output("--report", Path("data"))], r"is a directory"),
    ],
)
def test_check_outputs_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: list[Output], match: str) -> None:
    """Each bad output is refused naming its flag, its path and why."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_text("model")
    (tmp_path / "data").mkdir()
    (tmp_path / "afile").write_text("a file")
    inputs = [Input("the input model", Path("m.onnx")), Input("--data", Path("data"))]
    with pytest.raises(InputError, match=match):
        check_outputs(outputs, inputs)


def test_check_outputs_accepts_new_folders_for_directory_outputs(tmp_path: Path) -> None:
    """A checkpoint or cache folder may be created (with its parents); a file output's folder must exist."""
    check_outputs([Output("-o", tmp_path / "o.onnx"), Output("--checkpoint", tmp_path / "a" / "b", directory=True)],
                  [Input("the input model", tmp_path / "m.onnx")])  # fmt: skip
