"""The op-rule registry: which propagation rule handles each ONNX op type, and with which flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from agmc_onnx.ops.context import Propagation

RuleFn = Callable[["Propagation", onnx.NodeProto], None]


class Unsupported(Exception):
    """Raised by a rule for a case it cannot map; the node's channels get frozen with this reason."""


@dataclass(frozen=True)
class Rule:
    """A propagation rule and what the driver may hand it.

    any_axis: it handles a channel axis anywhere (otherwise the driver freezes the node when a tracked input
    carries its channels off axis 1); split_aware: it handles a channel axis split in two (channel shuffle),
    which freezes any other rule; layout_aware: it handles a factored layout (channels spread over several
    axes: attention heads, ops/factors.py), which freezes any other rule.
    """

    fn: RuleFn
    any_axis: bool = False
    split_aware: bool = False
    layout_aware: bool = False


class Registry:
    """Op type -> Rule; an op type is registered once (a second rule for it is a bug, so it raises)."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}

    def register(self, ops: tuple[str, ...], entry: Rule) -> None:
        """Register `entry` for every op type in `ops`, or none of them when one is taken."""
        taken = [op for op in ops if op in self._rules] + [op for i, op in enumerate(ops) if op in ops[:i]]
        if taken:
            raise ValueError(f"op type {taken[0]!r} already has a rule ({self._owner(taken[0], entry)})")
        for op in ops:
            self._rules[op] = entry

    def _owner(self, op: str, entry: Rule) -> str:
        """Name of the function that holds `op` (for the duplicate-registration message)."""
        held = self._rules.get(op, entry)
        return f"{held.fn.__module__}.{held.fn.__qualname__}"

    def rule(self, *ops: str, any_axis: bool = False, split_aware: bool = False,
             layout_aware: bool = False) -> Callable[[RuleFn], RuleFn]:
        """Decorator: register the function as the rule of each op type in `ops` (flags as in Rule)."""

        def deco(fn: RuleFn) -> RuleFn:
            self.register(ops, Rule(fn, any_axis, split_aware, layout_aware))
            return fn

        return deco

    def get(self, op_type: str) -> Rule | None:
        """The rule of an op type, None when no rule handles it."""
        return self._rules.get(op_type)

    def __contains__(self, op_type: object) -> bool:
        return op_type in self._rules

    def op_types(self) -> list[str]:
        """Every op type with a rule, sorted."""
        return sorted(self._rules)


RULES = Registry()
rule = RULES.rule
