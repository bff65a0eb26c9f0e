"""The `agmc-onnx` command line: a click group; each command lives in agmc_onnx/commands/.

Every run ends with exit 0, or one `agmc-onnx: error: ...` line and exit 1 (the run failed) or 2 (bad
input or usage): AgmcError carries its code, anything else is exit 1 naming the exception (`--debug`
or AGMC_ONNX_DEBUG=1 shows the traceback). SIGTERM and SIGHUP raise `Interrupted` so cleanups run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

import click

from agmc_onnx import __version__
from agmc_onnx.errors import AgmcError, Interrupted

_CLICK_OWN = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


class _Group(click.Group):
    """Runs a command with SIGTERM/SIGHUP turned into exceptions and every failure turned into one line."""

    def invoke(self, ctx: click.Context) -> object:
        debug = bool(ctx.params.get("debug")) or os.environ.get("AGMC_ONNX_DEBUG", "") not in ("", "0")
        with _signals_raise():
            try:
                return super().invoke(ctx)
            except _CLICK_OWN:
                raise
            except AgmcError as exc:
                _fail(str(exc), exc.exit_code, debug)
            except KeyboardInterrupt:
                _fail("stopped by signal SIGINT (Ctrl-C): interrupted; the run's outputs were not written", 1, debug)
            except Interrupted as exc:
                _fail(f"stopped by signal {exc.signal_name}: terminated; the run's outputs were not written", 1, debug)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                _fail(f"unexpected {type(exc).__name__}: {first} (the run failed; --debug shows the traceback)", 1,
                      debug)  # fmt: skip


def _fail(line: str, code: int, debug: bool) -> NoReturn:
    """The traceback when debugging, then the one error line; exit with `code`."""
    if debug:
        traceback.print_exc()
    click.echo(f"agmc-onnx: error: {line}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While a command runs: SIGTERM / SIGHUP raise Interrupted once (a second one is ignored while cleaning up)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signal.Signals(signum).name)

    old = {}
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):
                old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agmc-onnx")
@click.option("--debug", is_flag=True, help="On an error, show the traceback too (or set AGMC_ONNX_DEBUG=1).")
def main(debug: bool) -> None:
    """Prune the channels of a CNN given as an ONNX file, at a FLOPs or latency budget."""
    # torch-geometric still calls torch.jit.script at import; the deprecation is not the user's to act on.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def _register() -> None:
    from agmc_onnx.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
