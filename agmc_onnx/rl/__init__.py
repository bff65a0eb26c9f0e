"""Reinforcement learning for the search: environment with the action wall, DDPG agent, search loop.

The names below load on first use, so a scorer worker (agmc_onnx.rl.workers) starts without the agents' imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {"DDPG": "ddpg", "DDPGConfig": "ddpg", "ReplayBuffer": "ddpg", "PruningEnv": "env", "allowed_counts": "env"}
__all__ = ["DDPG", "ENCODERS", "DDPGConfig", "PruningEnv", "ReplayBuffer", "allowed_counts"]
ENCODERS = ("auto", "frozen", "trained")  # agmc's GNN: rl.runner.resolved_encoder (here: no torch, for the CLI)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"agmc_onnx.rl.{_WHERE[name]}"), name)
