"""The op-rule registry (agmc_onnx/ops/registry.py): one rule per op type, flags as a typed record."""

from __future__ import annotations

import onnx
import pytest

from agmc_onnx.ops import RULES, Registry, Rule
from agmc_onnx.ops.context import Propagation


def _noop(p: Propagation, node: onnx.NodeProto) -> None:
    """A rule that does nothing."""


def test_registering_an_op_twice_raises() -> None:
    """A second rule for an op type raises and registers nothing, in a fresh registry and in the global one."""
    reg = Registry()
    reg.rule("Foo", "Bar", any_axis=True)(_noop)
    with pytest.raises(ValueError, match="'Bar' already has a rule"):
        reg.rule("Baz", "Bar")(_noop)
    assert "Baz" not in reg and reg.op_types() == ["Bar", "Foo"]
    with pytest.raises(ValueError, match="'Qux' already has a rule"):
        reg.rule("Qux", "Qux")(_noop)
    assert "Qux" not in reg
    before = RULES.get("Relu")
    with pytest.raises(ValueError, match="'Relu' already has a rule .*unary.passthrough"):
        RULES.rule("Relu")(_noop)
    assert RULES.get("Relu") is before


def test_rule_flags_are_a_record() -> None:
    """The driver reads any_axis / split_aware from the Rule record, not from function attributes."""
    reg = Registry()
    reg.rule("Foo", split_aware=True)(_noop)
    assert reg.get("Foo") == Rule(_noop, any_axis=False, split_aware=True)
    assert reg.get("Nope") is None
    reshape, conv = RULES.get("Reshape"), RULES.get("Conv")
    assert reshape is not None and reshape.any_axis and reshape.split_aware
    assert conv is not None and not conv.any_axis and not conv.split_aware
    assert not hasattr(conv.fn, "any_axis")


def test_every_family_registers_its_ops() -> None:
    """Importing agmc_onnx.ops registers each family's rules (a sample per family)."""
    modules = {op: RULES.get(op).fn.__module__.rsplit(".", 1)[-1] for op in  # type: ignore[union-attr]
               ("Relu", "Resize", "Conv", "BatchNormalization", "Add", "Concat", "Slice", "Reshape", "Expand")}
    assert modules == {"Relu": "unary", "Resize": "unary", "Conv": "layers", "BatchNormalization": "layers",
                       "Add": "elementwise", "Concat": "layout", "Slice": "layout", "Reshape": "reshape",
                       "Expand": "reshape"}
