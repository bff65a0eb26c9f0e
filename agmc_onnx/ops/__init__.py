"""Op rules: one small function per ONNX op type for channel propagation, plus surgery hooks.

A propagation rule `rule(p, node)` reads the channel ids of the node's inputs from the Propagator `p`
(agmc_onnx.groups), sets the ids of its outputs, unites ids that must go together, records the
parameter tensors that hold channels (members) and, for nodes whose attributes or constant inputs must
change when channels go, registers a surgery hook. A rule that meets something it does not
understand raises `Unsupported(reason)`: the caller then freezes every channel the node touches.
"""

from __future__ import annotations

from agmc_onnx.ops.hooks import HOOKS
from agmc_onnx.ops.rules import RULES, Unsupported

__all__ = ["HOOKS", "RULES", "Unsupported"]
