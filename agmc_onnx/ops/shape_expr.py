"""Shape vectors built at run time (Reshape targets, Resize sizes): Concat of Shape(x)[k] and constants.

A file exported with dynamic sizes computes e.g. YOLO's `Reshape(x, Concat(Shape(y)[0], 64, -1))`. Its
entries are read here with where each comes from: a constant (a rewrite can write the kept width into it,
and the file stays size-agnostic) or a dim of a tensor (Shape(y)[k]: it follows that tensor at run time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agmc_onnx.ops.common import attrs
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported

_PASS = ("Unsqueeze", "Squeeze", "Cast", "Identity")


@dataclass(frozen=True)
class Entry:
    """One entry of a shape vector: its value at the analysis size (an int, or a symbol for the batch),
    and where it comes from: `const` (initializer, flat index) or `dim` (tensor, axis) for Shape(tensor)[axis]."""

    value: Any
    const: tuple[str, int] | None = None
    dim: tuple[str, int] | None = None


def entries(p: Propagation, name: str, depth: int = 0) -> list[Entry] | None:
    """The entries of a 1-D integer tensor built from constants, Shape, Gather, Slice and Concat (through
    Unsqueeze/Squeeze/Cast); None when some entry is computed otherwise (arithmetic, data)."""
    c = p.const(name)
    if c is not None:
        return [Entry(int(v), const=(name, i)) for i, v in enumerate(np.asarray(c).reshape(-1))]
    node = p.model.producer.get(name)
    if node is None or depth > 12 or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in _PASS:
        return entries(p, node.input[0], depth + 1)
    if node.op_type == "Shape":
        shape = p.shape(node.input[0])
        if shape is None:
            return None
        a = attrs(node)
        r = len(shape)
        ks = range(r)[slice(int(a.get("start", 0)), a.get("end"))]
        return [Entry(shape[k], dim=(node.input[0], k)) for k in ks]
    if node.op_type == "Concat":
        out: list[Entry] = []
        for i in node.input:
            got = entries(p, i, depth + 1)
            if got is None:
                return None
            out += got
        return out
    if node.op_type == "Gather" and int(attrs(node).get("axis", 0)) == 0:
        data, idx = entries(p, node.input[0], depth + 1), p.const(node.input[1])
        if data is None or idx is None:
            return None
        picks = [int(i) for i in np.asarray(idx).reshape(-1)]
        if any(not -len(data) <= i < len(data) for i in picks):
            return None
        return [data[i] for i in picks]
    if node.op_type == "Slice":
        data = entries(p, node.input[0], depth + 1)
        bounds = [p.const(i) if i else None for i in list(node.input[1:5]) + [""] * (5 - len(node.input))]
        if data is None or bounds[0] is None or bounds[1] is None:
            return None
        if bounds[2] is not None and [int(v) for v in np.asarray(bounds[2]).reshape(-1)] not in ([0], [-1]):
            return None
        step = int(np.asarray(bounds[3]).reshape(-1)[0]) if bounds[3] is not None else 1
        start, end = (int(np.asarray(b).reshape(-1)[0]) for b in bounds[:2])
        return data[slice(*slice(start, end, step).indices(len(data)))]
    return None


@dataclass(frozen=True)
class RuntimeShape:
    """A shape vector built at run time, read as numbers for the analysis (0 for a batch entry copied from
    the input, like Reshape's 0), with where each entry comes from."""

    values: list[int]
    items: list[Entry]

    def channel_source(self, p: Propagation, index: int, ids: list[int]) -> tuple[str, int] | None:
        """(constant, flat index) that holds entry `index`, the width of channels `ids`; None when the entry
        is Shape(y)[k] of a tensor that carries those channels on axis k (it follows the pruned width)."""
        e = self.items[index]
        if e.const is not None:
            return e.const
        if e.dim is not None and p.ids(e.dim[0]) == ids and p.axis(e.dim[0]) == e.dim[1] and p.split(e.dim[0]) is None:
            return None
        raise Unsupported("the channel entry of a shape built at run time is not a constant")


def runtime_shape(p: Propagation, name: str, batch: Any, allowzero: bool = False) -> RuntimeShape | None:
    """`name` as a RuntimeShape when it is built at run time from constants and Shape entries; a batch entry
    (`batch`, the input's dim 0) must sit at position 0, where it reads as 0 (copy). None otherwise."""
    if p.const(name) is not None:
        return None
    items = entries(p, name)
    if items is None:
        return None
    values: list[int] = []
    for k, e in enumerate(items):
        if isinstance(e.value, (int, np.integer)):
            values.append(int(e.value))
        elif k == 0 and e.value == batch and not allowzero:
            values.append(0)
        else:
            return None
    return RuntimeShape(values, items)

