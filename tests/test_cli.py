"""agmc_onnx.cli: every failure ends in one error line and exit 1 or 2; --debug adds the traceback."""

from __future__ import annotations

import signal
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from agmc_onnx.cli import main
from agmc_onnx.errors import Interrupted
from agmc_onnx.workflows import validate
from tests.helpers_onnx import tiny_convnet


def _inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, *extra: str,
             env: dict[str, str] | None = None) -> tuple[int, list[str], str]:  # fmt: skip
    """`inspect` on the tiny net with its validation step raising `exc`: (exit code, stderr lines, stderr)."""
    onnx.save_model(tiny_convnet(), str(tmp_path / "m.onnx"))

    def boom(*args: object) -> None:
        raise exc

    monkeypatch.setattr(validate, "validate_inspect", boom)
    result = CliRunner().invoke(main, [*extra, "inspect", str(tmp_path / "m.onnx")], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, [ln for ln in result.stderr.splitlines() if ln.strip()], result.stderr


def test_an_unexpected_exception_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, lines, err = _inspect(tmp_path, monkeypatch, ValueError("bad thing\nsecond line"))
    assert code == 1 and "Traceback" not in err
    assert lines == ["agmc-onnx: error: unexpected ValueError: bad thing (the run failed; --debug shows the traceback)"]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    extra, env = (("--debug",), None) if how == "flag" else ((), {"AGMC_ONNX_DEBUG": "1"})
    code, lines, err = _inspect(tmp_path, monkeypatch, ValueError("bad thing"), *extra, env=env)
    assert code == 1 and "Traceback (most recent call last)" in err and "ValueError: bad thing" in err
    assert lines[-1].startswith("agmc-onnx: error: unexpected ValueError: bad thing")


@pytest.mark.parametrize(("exc", "words"), [(KeyboardInterrupt(), "signal SIGINT"), (Interrupted("SIGTERM"), "signal SIGTERM")])
def test_interrupts_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, words: str) -> None:
    code, lines, err = _inspect(tmp_path, monkeypatch, exc)
    assert code == 1 and len(lines) == 1 and words in lines[0] and "Traceback" not in err


def test_sigterm_handler_is_installed_only_while_a_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During the command SIGTERM raises Interrupted (so cleanups run); afterwards the old handler is back."""
    seen = {}

    def record(*args: object) -> None:
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        raise Interrupted("SIGTERM")

    before = signal.getsignal(signal.SIGTERM)
    onnx.save_model(tiny_convnet(), str(tmp_path / "m.onnx"))
    monkeypatch.setattr(validate, "validate_inspect", record)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and callable(seen["handler"]) and seen["handler"] is not before
    assert signal.getsignal(signal.SIGTERM) == before
