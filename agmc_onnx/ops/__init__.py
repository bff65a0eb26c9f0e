"""Op rules by op family: one small function per ONNX op type for channel propagation, each surgery
rewrite beside the rule that registers it.

A propagation rule `rule(p, node)` reads the channel ids of the node's inputs from `p` (the Propagation
protocol, agmc_onnx/ops/context.py), sets the ids of its outputs, unites ids that must go together, records
the parameter tensors that hold channels (members) and, for nodes whose attributes or constant inputs must
change when channels go, registers a Rewrite (a small frozen record whose `apply` edits the node at
surgery). A rule that meets something it does not understand raises `Unsupported(reason)`: the caller then
freezes every channel the node touches. Importing this package registers every family's rules.
"""

from __future__ import annotations

from agmc_onnx.ops import attention, elementwise, factors, layers, layout, norms, reshape, unary
from agmc_onnx.ops.context import Propagation, Rewrite, Surgery
from agmc_onnx.ops.layers import DepthwiseGroups
from agmc_onnx.ops.registry import RULES, Registry, Rule, Unsupported

__all__ = [
    "RULES", "DepthwiseGroups", "Propagation", "Registry", "Rewrite", "Rule", "Surgery", "Unsupported",
    "attention", "elementwise", "factors", "layers", "layout", "norms", "reshape", "unary",
]  # fmt: skip
