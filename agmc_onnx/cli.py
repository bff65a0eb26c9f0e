"""The `agmc-onnx` command line: a click group; each command lives in agmc_onnx/commands/."""

from __future__ import annotations

import sys
import warnings

import click

from agmc_onnx import __version__
from agmc_onnx.errors import AgmcError


class _Group(click.Group):
    """Turns AgmcError into one line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AgmcError as exc:
            click.echo(f"agmc-onnx: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agmc-onnx")
def main() -> None:
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
