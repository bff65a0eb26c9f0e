"""Broadcasting element-wise ops over several tensors: full-width activations unite their channels
(residual Add, SE Mul); per-channel constants are 'norm' members."""

from __future__ import annotations

import onnx

from agmc_onnx.ops import factors
from agmc_onnx.ops.common import rank
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported, rule


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less",
      "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift", any_axis=True,
      layout_aware=True)
def elementwise(p: Propagation, node: onnx.NodeProto) -> None:
    """Broadcasting element-wise op: unite full-width activations; per-channel constants are norm members
    (operands in a factored layout: ops/factors.py)."""
    if any(i and p.layout(i) is not None for i in node.input):
        factors.elementwise(p, node)
        return
    out_name = node.output[0]
    inputs = [i for i in node.input if i]
    ranks = [rank(p, i) for i in inputs]
    r_out = rank(p, out_name)
    if r_out is None:
        if any(r is None for r in ranks):
            raise Unsupported("unknown ranks")
        r_out = max(ranks)  # type: ignore[type-var]
    if r_out < 2:
        raise Unsupported("rank below 2")
    full: list[list[int]] = []
    consts: list[tuple[str, int]] = []
    # the channel axis in output coordinates: where the full-width tracked inputs carry their ids
    wide = [i for i in inputs if p.ids(i) is not None and len(p.ids(i)) > 1]  # type: ignore[arg-type]
    for name in wide:
        if rank(p, name) != r_out:
            raise Unsupported(f"{name!r} broadcast along the channel axis")
    axes_out = {p.axis(i) for i in wide}
    if len(axes_out) > 1:
        raise Unsupported("operands carry channels on different axes")
    if axes_out:
        t_out = axes_out.pop()
    else:
        first = next(i for i in inputs if p.ids(i) is not None)
        t_out = p.axis(first) + r_out - (rank(p, first) or r_out)
    width = len(p.ids(wide[0])) if wide else None  # type: ignore[arg-type]
    for name in inputs:
        shape = p.shape(name)
        ids = p.ids(name)
        if shape is None:
            raise Unsupported(f"unknown shape of {name!r}")
        ax = t_out - (r_out - len(shape))
        if ax < 0 or shape[ax] == 1:
            continue  # broadcast along the channel axis (a single channel or none)
        if ids is not None:
            if len(shape) != r_out or len(ids) != width or p.axis(name) != ax:
                raise Unsupported(f"{name!r} does not line up with the channel axis")
            full.append(ids)
        elif p.const(name) is not None:
            consts.append((name, ax))
        else:
            raise Unsupported(f"per-channel operand {name!r} computed at run time")
    if not full:
        if consts:
            p.opaque(out_name, f"channels created by broadcasting in {node.op_type} {node.name}", t_out)
            return
        raise Unsupported("no operand carries the channel axis")
    out = full[0]
    for other in full[1:]:
        p.unite(out, other)
    for name, ax in consts:
        if p.const(name).shape[ax] != len(out):
            raise Unsupported(f"constant {name!r} does not match the channels")
        p.member(name, node, ax, "norm", out)
    p.set(out_name, out, t_out)
