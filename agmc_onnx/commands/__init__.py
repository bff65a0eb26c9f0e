"""CLI commands, one module each; they parse, call the library and render, nothing more."""

from __future__ import annotations

import importlib

import click

# module name -> click command attribute; a module that is not there yet is skipped.
_MODULES = {
    "inspect": "inspect_cmd",
    "prune": "prune_cmd",
    "finetune": "finetune_cmd",
    "bench": "bench_cmd",
}


def _load() -> list[click.Command]:
    commands = []
    for module, attr in _MODULES.items():
        try:
            mod = importlib.import_module(f"agmc_onnx.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"agmc_onnx.commands.{module}":
                continue
            raise
        commands.append(getattr(mod, attr))
    return commands


COMMANDS = _load()
