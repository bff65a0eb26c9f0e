"""Bad input through the CLI (issue 2 item 8): exit 2, one stderr line naming file and cause, nothing written."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result

from agmc_onnx.cli import main
from agmc_onnx.data import METADATA_KEY
from tests.helpers_onnx import conv_to_output, sha256, single_gemm, tiny_convnet

LATEST_OPSET = onnx.defs.onnx_opset_version()


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its hash: what must not change."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _invoke(args: list[str], cwd: Path) -> Result:
    """Run the CLI in-process from `cwd`."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, args, catch_exceptions=True)
    finally:
        os.chdir(old)


def _stderr_lines(result: Result) -> list[str]:
    """Non-empty lines the run wrote on stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


@dataclass
class Case:
    """One bad input: how to make the files, the CLI arguments, what the error line must mention."""

    make: Callable[[Path], Path]  # writes the input into a directory, returns its path
    args: Callable[[Path, Path], list[str]]  # (input, directory) -> arguments after `prune INPUT`
    words: tuple[str, ...]  # at least one of these (lower case) appears in the error line
    names_input: bool = True  # the line names the input file


def _save(model: onnx.ModelProto, name: str) -> Callable[[Path], Path]:
    """A maker that saves `model` as DIR/name."""

    def make(d: Path) -> Path:
        path = d / name
        onnx.save_model(model, str(path))
        return path

    return make


def _write_bytes(data: Callable[[], bytes], name: str) -> Callable[[Path], Path]:
    """A maker that writes raw bytes as DIR/name."""

    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(data())
        return path

    return make


def _missing_external(d: Path) -> Path:
    """A model saved with external data whose data file is then deleted."""
    path = d / "ext.onnx"
    _save_external(path)
    (d / "ext.onnx.data").unlink()
    return path


def _save_external(path: Path) -> None:
    """Save the tiny net with every tensor in PATH.data."""
    onnx.save_model(
        tiny_convnet(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + ".data", size_threshold=0,
    )  # fmt: skip


def _with_opset(opset: int) -> onnx.ModelProto:
    """The tiny conv net claiming another default-domain opset."""
    model = tiny_convnet()
    model.opset_import[0].version = opset
    return model


def _out(_: Path, d: Path) -> list[str]:
    """A valid target and output path."""
    return ["--target-flops", "0.5", "--round-to", "1", "-o", str(d / "out.onnx")]


def _target(value: str) -> Callable[[Path, Path], list[str]]:
    """Arguments with a given --target-flops value."""
    return lambda _, d: ["--target-flops", value, "--round-to", "1", "-o", str(d / "out.onnx")]


def _file_parent(d: Path) -> Path:
    """A path whose parent 'directory' is a regular file."""
    (d / "afile").write_text("not a directory")
    return d / "afile" / "out.onnx"


CASES: dict[str, Case] = {
    "not_onnx": Case(_write_bytes(lambda: b"this is not a protobuf at all\n" * 10, "text.onnx"), _out, ("onnx", "pars", "load", "valid")),
    "empty_file": Case(_write_bytes(lambda: b"", "empty.onnx"), _out, ("onnx", "empty", "pars", "load", "valid", "graph")),
    "truncated": Case(
        _write_bytes(lambda: tiny_convnet().SerializeToString()[:300], "trunc.onnx"), _out,
        ("trunc", "pars", "onnx", "load", "valid", "corrupt"),
    ),
    "missing_external_data": Case(_missing_external, _out, ("external", "ext.onnx.data", "data")),
    "opset_6": Case(_save(_with_opset(6), "op6.onnx"), _out, ("opset",)),
    "opset_30": Case(_save(_with_opset(30), "op30.onnx"), _out, ("opset",)),
    f"opset_{LATEST_OPSET + 1}": Case(_save(_with_opset(LATEST_OPSET + 1), "opnext.onnx"), _out, ("opset",)),
    "nothing_prunable_gemm": Case(_save(single_gemm(), "gemm.onnx"), _out, ("prunable", "nothing", "frozen")),
    "nothing_prunable_frozen": Case(_save(conv_to_output(), "frozen.onnx"), _out, ("prunable", "nothing", "frozen")),
    "target_0": Case(_save(tiny_convnet(), "m.onnx"), _target("0"), ("target",), names_input=False),
    "target_1.5": Case(_save(tiny_convnet(), "m.onnx"), _target("1.5"), ("target",), names_input=False),
    "target_-1": Case(_save(tiny_convnet(), "m.onnx"), _target("-1"), ("target",), names_input=False),
    "target_nan": Case(_save(tiny_convnet(), "m.onnx"), _target("nan"), ("target",), names_input=False),
    "target_unreachable": Case(_save(tiny_convnet(), "m.onnx"), _target("0.01"), ("target", "reach", "minimum")),
    "output_is_input": Case(
        _save(tiny_convnet(), "m.onnx"), lambda i, _: ["--target-flops", "0.5", "--round-to", "1", "-o", str(i)],
        ("input", "overwrite", "same"),
    ),
    "output_is_input_other_spelling": Case(
        _save(tiny_convnet(), "m.onnx"),
        lambda i, d: ["--target-flops", "0.5", "--round-to", "1", "-o", str(d / "." / ".." / d.name / "m.onnx")],
        ("input", "overwrite", "same"),
    ),
    "output_parent_is_a_file": Case(
        _save(tiny_convnet(), "m.onnx"),
        lambda _, d: ["--target-flops", "0.5", "--round-to", "1", "-o", str(_file_parent(d))],
        ("writ", "director", "output", "afile"), names_input=False,
    ),
}  # fmt: skip

if os.geteuid() != 0:  # root writes through a read-only mode, so only a normal user can test it

    def _readonly_dir(_: Path, d: Path) -> list[str]:
        """Output into a directory without write permission."""
        ro = d / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ["--target-flops", "0.5", "--round-to", "1", "-o", str(ro / "out.onnx")]

    CASES["output_dir_read_only"] = Case(
        _save(tiny_convnet(), "m.onnx"), _readonly_dir, ("writ", "permission", "output", "ro"), names_input=False
    )


def test_good_input_is_accepted(tmp_path: Path) -> None:
    """Positive control: the same tiny net and flags succeed, so each bad case fails for its own reason."""
    model = tiny_convnet()
    onnx.helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    model.doc_string = "a tiny net"
    src = _save(model, "m.onnx")(tmp_path)
    before = sha256(src)
    result = _invoke(["prune", str(src), *_out(src, tmp_path), "--report", str(tmp_path / "r.json")], tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.onnx").exists() and (tmp_path / "r.json").exists()
    out = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert (out.ir_version, out.opset_import, out.producer_name) == (model.ir_version, model.opset_import, model.producer_name)
    kept = [p for p in out.metadata_props if p.key != METADATA_KEY]  # plus the recipe the output records (issue 12)
    assert kept == list(model.metadata_props) and out.doc_string == model.doc_string
    assert [p.key for p in out.metadata_props if p.key == METADATA_KEY] == [METADATA_KEY]
    leftovers = {p.name for p in tmp_path.iterdir()} - {"m.onnx", "out.onnx", "r.json", "r.md"}  # r.md: markdown report
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert sha256(src) == before


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(tmp_path: Path, name: str) -> None:
    """Exit 2, one clear stderr line, no file written, the input's bytes unchanged."""
    case = CASES[name]
    src = case.make(tmp_path)
    args = case.args(src, tmp_path)
    before = _tree(tmp_path)
    result = _invoke(["prune", str(src), *args, "--report", str(tmp_path / "report.json")], tmp_path)
    lines = _stderr_lines(result)
    assert result.exit_code == 2, f"exit {result.exit_code}; stderr={result.stderr!r}; exc={result.exception!r}"
    assert len(lines) == 1, f"want exactly one stderr line, got {lines!r}"
    line = lines[0]
    assert "Traceback" not in result.output
    if case.names_input:
        assert src.name in line, f"the line does not name {src.name}: {line!r}"
    assert any(w in line.lower() for w in case.words), f"the line gives no cause among {case.words}: {line!r}"
    if os.path.isdir(tmp_path / "ro"):
        (tmp_path / "ro").chmod(0o755)
    assert _tree(tmp_path) == before, "a file was written or changed"


FILE_CASES = ("not_onnx", "empty_file", "truncated", "missing_external_data", "opset_6", "opset_30")


@pytest.mark.parametrize("name", FILE_CASES)
def test_bad_input_inspect(tmp_path: Path, name: str) -> None:
    """`inspect` rejects the same unreadable files the same way: exit 2, one line naming the file."""
    case = CASES[name]
    src = case.make(tmp_path)
    before = _tree(tmp_path)
    result = _invoke(["inspect", str(src)], tmp_path)
    lines = _stderr_lines(result)
    assert result.exit_code == 2, f"exit {result.exit_code}; stderr={result.stderr!r}; exc={result.exception!r}"
    assert len(lines) == 1 and src.name in lines[0], lines
    assert any(w in lines[0].lower() for w in case.words), lines[0]
    assert _tree(tmp_path) == before


def test_external_data_is_read(tmp_path: Path) -> None:
    """Positive control for the external-data case: with its data file present the model prunes."""
    src = tmp_path / "ext.onnx"
    _save_external(src)
    before = _tree(tmp_path)
    result = _invoke(["prune", str(src), *_out(src, tmp_path)], tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.onnx"
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert {k: v for k, v in _tree(tmp_path).items() if k in before} == before


def test_default_output_not_written_on_error(tmp_path: Path) -> None:
    """Without -o, a failed run leaves no MODEL.pruned.onnx (nor a temp file) beside the input."""
    src = _save(tiny_convnet(), "m.onnx")(tmp_path)
    before = _tree(tmp_path)
    result = _invoke(["prune", str(src), "--target-flops", "0.01", "--round-to", "1"], tmp_path)
    assert result.exit_code == 2, result.output
    assert len(_stderr_lines(result)) == 1
    assert _tree(tmp_path) == before


def test_missing_input_file(tmp_path: Path) -> None:
    """A path that does not exist: exit 2, named."""
    result = _invoke(["prune", str(tmp_path / "nope.onnx"), "--target-flops", "0.5"], tmp_path)
    assert result.exit_code == 2
    lines = _stderr_lines(result)
    assert len(lines) >= 1 and any("nope.onnx" in line for line in lines)
    assert list(tmp_path.iterdir()) == []
