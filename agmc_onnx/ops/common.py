"""Small readers every op family shares: attributes, optional inputs, tracked ids, constant-or-attribute lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def inp(node: onnx.NodeProto, i: int) -> str:
    """Name of input i, '' when absent."""
    return node.input[i] if len(node.input) > i else ""


def tracked(p: Propagation, name: str) -> list[int]:
    """Ids of a tensor that must be tracked (an activation with a channel axis)."""
    ids = p.ids(name)
    if ids is None:
        raise Unsupported(f"input {name!r} has no known channel axis")
    return ids


def const_or_attr(p: Propagation, node: onnx.NodeProto, idx: int, attr: str) -> list[int] | None:
    """An int list given as attribute `attr` (old opsets) or as constant input `idx` (new ones)."""
    a = attrs(node)
    if attr in a:
        return [int(v) for v in a[attr]]
    name = inp(node, idx)
    if not name:
        return None
    val = p.const(name)
    if val is None:
        raise Unsupported(f"{attr} of {node.op_type} computed at run time")
    return [int(v) for v in np.asarray(val).reshape(-1)]


def rank(p: Propagation, name: str) -> int | None:
    """Rank of a tensor, None when unknown."""
    s = p.shape(name)
    return None if s is None else len(s)

