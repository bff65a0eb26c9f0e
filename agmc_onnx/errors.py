"""Errors the tool reports to users: one line naming the file and the cause, with an exit code."""

from __future__ import annotations

from pathlib import Path


class AgmcError(Exception):
    """Base error; `exit_code` is what the CLI exits with (1: the run failed)."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(AgmcError):
    """Bad input or usage (unreadable model, bad flag value, unreachable target): exit code 2."""

    exit_code = 2


class RuntimeMissingError(AgmcError):
    """Neither onnxruntime nor onnxruntime-gpu is installed."""

    exit_code = 2


class Interrupted(BaseException):
    """SIGTERM / SIGHUP arrived: raised by the CLI's signal handler so every cleanup (`finally`, staged
    outputs) runs; a BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(signal_name)
