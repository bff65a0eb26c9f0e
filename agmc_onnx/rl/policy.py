"""Policy files (--save-policy / --policy): what both agents write around their own networks, and the checks on reading."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from agmc_onnx.errors import InputError


def policy_header(agent: str, source: nn.Module, config: Any) -> dict[str, Any]:
    """The agent, the state source's kind / decoder and trainable weights (not a fixed table), the config."""
    return {
        "agent": agent,
        "kind": getattr(source, "kind", "fixed"),
        "decoder": getattr(source, "decoder", None),
        "config": asdict(config),
        "source": {k: v for k, v in source.state_dict().items() if k != "table"},
    }


def load_policy_source(d: dict[str, Any], agent: str, source: nn.Module) -> None:
    """Check that a policy file was written by `agent` with the same decoder, then load its state source."""
    saved = d.get("agent", "ddpg")  # files from before PPO existed are DDPG's
    if saved != agent:
        raise InputError(f"this policy was saved by agent {saved!r}, not {agent!r}")
    mine = getattr(source, "decoder", None)
    if d.get("decoder", mine) != mine:
        raise InputError(f"this policy was saved with decoder {d.get('decoder')!r}, not {mine!r}")
    try:
        source.load_state_dict(d["source"], strict=False)
    except RuntimeError as exc:  # size mismatch: an encoder with other node features (an older agmc-onnx)
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(f"this policy's state encoder does not fit this version's ({first}): it was saved by "
                         "another agmc-onnx version; search without --policy to train a new one") from None
