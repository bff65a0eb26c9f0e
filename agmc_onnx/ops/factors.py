"""Factored channel layouts: channels spread over several axes of a tensor (attention heads).

A plain tensor carries its channel ids as one list on one axis. Inside attention the ids of one Linear's
output end up on several axes ([B, N, 3*H*d] -> [B, N, 3, H, d] -> [3, B, H, N, d]), or share an axis with
the batch ([N, B*H, d] in torchvision's MultiheadAttention). A `Layout` describes any such tensor: each axis
is a row-major sequence of atoms; an atom is a size (static, or proportional to the batch) that either holds
no channels (batch, tokens, windows) or spans one dimension ("factor") of an id array (ops/atoms.py). Reshape splits and merges atoms,
Transpose permutes axes, Squeeze/Unsqueeze drop or add size-1 axes; Split/Gather on a factor that is never
pruned (the q|k|v "3") take a slice of the ids after uniting its slices.

Canonical form (what `put` stores): factors in memory order, no size-1 atoms, no factor along which the ids
do not vary, adjacent channel atoms of one axis merged; a layout whose channels sit on one axis next to
static atoms only is stored as a plain id list instead (each id repeated over the static atoms, like
Flatten), so every other rule keeps working on it. Sizes are monomials c * U**e in the tensor's one
run-time dim U (the batch): a -1 in a Reshape target resolves to one.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx

from agmc_onnx.ops.atoms import Atom, Layout, Mono, Plain, canonical, mono_prod
from agmc_onnx.ops.common import attrs, const_or_attr, rank
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.registry import Unsupported


def layout_of(p: Propagation, name: str) -> Layout:
    """The layout of a tracked tensor: its factored one, or one built from its id list and shape."""
    lay = p.layout(name)
    if lay is not None:
        return lay
    ids = p.ids(name)
    shape = p.shape(name)
    if ids is None or shape is None:
        raise Unsupported(f"{name!r} has no known channels or shape")
    if p.split(name) is not None:
        raise Unsupported("reads a channel axis split in two (channel shuffle)")
    t = p.axis(name)
    if sum(not isinstance(d, int) for k, d in enumerate(shape) if k != t) > 1:
        raise Unsupported("more than one run-time dim")
    axes: list[tuple[Atom, ...]] = []
    for k, d in enumerate(shape):
        if k == t:
            axes.append((Atom(Mono(Fraction(len(ids))), 0),))
        else:
            m = Mono.of(d)
            axes.append(() if m.one else (Atom(m),))
    return Layout(np.array(ids, dtype=np.int64).reshape(len(ids)), tuple(axes))


def put(p: Propagation, name: str, lay: Layout) -> Layout | Plain:
    """Store a layout on an output (canonical; checked against the inferred shape); returns what was stored."""
    try:
        canon = canonical(lay)
    except ValueError as exc:
        raise Unsupported(str(exc)) from exc
    shape = p.shape(name)
    if shape is not None:
        axes = lay.axes
        if len(shape) != len(axes):
            raise Unsupported(f"layout of rank {len(axes)} for {name!r} of rank {len(shape)}")
        for k, d in enumerate(shape):
            size = mono_prod([a.size for a in axes[k]]).static
            if isinstance(d, int) and size is not None and size != d:
                raise Unsupported(f"channel layout does not match the shape of {name!r}")
    if isinstance(canon, Plain):
        p.set(name, canon.ids, canon.axis)
    else:
        p.set_layout(name, canon)
    return canon


def unite_along(p: Propagation, ids: np.ndarray, f: int) -> None:
    """Unite the ids of every slice along factor f position-wise (a factor that is never pruned: q|k|v)."""
    moved = np.moveaxis(ids, f, 0).reshape(ids.shape[f], -1)
    for row in moved[1:]:
        p.unite([int(v) for v in moved[0]], [int(v) for v in row])


# ------------------------------------------------------------------------------------------------------
# Axis moves, slices and element-wise ops on factored layouts


def transpose(p: Propagation, node: onnx.NodeProto) -> None:
    """Transpose: the axes (and the atoms on them) follow `perm`."""
    lay = layout_of(p, node.input[0])
    perm = attrs(node).get("perm")
    r = len(lay.axes)
    perm = list(range(r))[::-1] if perm is None else [int(a) for a in perm]
    if sorted(perm) != list(range(r)):
        raise Unsupported("Transpose perm does not match the rank")
    put(p, node.output[0], Layout(lay.ids, tuple(lay.axes[a] for a in perm)))


def squeeze(p: Propagation, node: onnx.NodeProto) -> None:
    """(Un)Squeeze: size-1 axes go or come (any axis, the first too: in attention it may hold q|k|v)."""
    lay = layout_of(p, node.input[0])
    axes = const_or_attr(p, node, 1, "axes")
    if axes is None:
        if node.op_type == "Unsqueeze":
            raise Unsupported("Unsqueeze without axes")
        axes = [k for k in range(len(lay.axes)) if lay.axis_size(k).one]
    if node.op_type == "Squeeze":
        r = len(lay.axes)
        drop = {a % r for a in axes}
        if any(not lay.axis_size(a).one or any(x.factor >= 0 for x in lay.axes[a]) for a in drop):
            raise Unsupported("Squeeze of a channel axis or of an axis whose size is not 1")
        new = tuple(ax for k, ax in enumerate(lay.axes) if k not in drop)
    else:
        r = len(lay.axes) + len(axes)
        ins = {a % r for a in axes}
        it = iter(lay.axes)
        new = tuple(() if k in ins else next(it) for k in range(r))
    put(p, node.output[0], Layout(lay.ids, new))


def _factor_alone(lay: Layout, k: int) -> int | None:
    """The factor on axis k when it is the axis' only atom, None when the axis holds no channels."""
    atoms = lay.axes[k]
    facs = [a.factor for a in atoms if a.factor >= 0]
    if not facs:
        return None
    if len(atoms) != 1:
        raise Unsupported("cuts an axis that holds channels and other dims")
    return facs[0]


def _opaque_axis(p: Propagation, name: str, k: int) -> tuple[Atom, ...]:
    """Atoms of an output axis that holds no channels and whose size an op changed (a Slice, a Split, a
    broadcast), from the output's inferred shape; it must be static."""
    shape = p.shape(name)
    if shape is None or k >= len(shape) or not isinstance(shape[k], int):
        raise Unsupported(f"run-time size of axis {k} of {name!r}")
    return () if shape[k] == 1 else (Atom(Mono(Fraction(shape[k]))),)


def split(p: Propagation, node: onnx.NodeProto) -> None:
    """Split of a factored tensor: off the channel axes every output keeps the layout; across a factor cut
    into equal pieces (q|k|v) the pieces' ids are united, so the factor is never pruned."""
    lay = layout_of(p, node.input[0])
    r = len(lay.axes)
    axis = int(attrs(node).get("axis", 0)) % r
    f = _factor_alone(lay, axis)
    outs = list(node.output)
    if f is None:
        for o in outs:
            if o:
                put(p, o, Layout(lay.ids, tuple(_opaque_axis(p, o, k) if k == axis else ax
                                                for k, ax in enumerate(lay.axes))))
        return
    n = lay.ids.shape[f]
    sizes = const_or_attr(p, node, 1, "split") or [n // len(outs)] * len(outs)
    if len(set(sizes)) != 1 or sum(sizes) != n:
        raise Unsupported("Split of a channel factor into unequal pieces")
    s = sizes[0]
    grid = lay.ids.reshape(lay.ids.shape[:f] + (len(sizes), s) + lay.ids.shape[f + 1 :])
    unite_along(p, grid, f)
    for j, o in enumerate(outs):
        if o:
            part = grid.take(j, axis=f)
            atom = Atom(Mono(Fraction(s)), f)
            put(p, o, Layout(part, tuple((atom,) if k == axis else ax for k, ax in enumerate(lay.axes))))


def gather(p: Propagation, node: onnx.NodeProto) -> None:
    """Gather with constant indices on a factored tensor: off the channel axes the layout follows; a scalar
    index into a factor (q|k|v picked by index) unites the factor's slices and drops it."""
    lay = layout_of(p, node.input[0])
    idx = p.const(node.input[1])
    r = len(lay.axes)
    if idx is None:
        raise Unsupported("Gather indices computed at run time")
    axis = int(attrs(node).get("axis", 0)) % r
    f = _factor_alone(lay, axis)
    if f is None:
        mid = tuple(() if d == 1 else (Atom(Mono(Fraction(int(d)))),) for d in idx.shape)
        put(p, node.output[0], Layout(lay.ids, lay.axes[:axis] + mid + lay.axes[axis + 1 :]))
        return
    if idx.ndim != 0:
        raise Unsupported("Gather of several slices of a channel factor")
    unite_along(p, lay.ids, f)
    i = int(idx) % lay.ids.shape[f]
    put(p, node.output[0], Layout(lay.ids.take([i], axis=f), lay.axes[:axis] + lay.axes[axis + 1 :]))


def slice_(p: Propagation, node: onnx.NodeProto) -> None:
    """Slice of a factored tensor on axes without channels: the layout follows."""
    lay = layout_of(p, node.input[0])
    r = len(lay.axes)
    starts = const_or_attr(p, node, 1, "starts")
    axes = const_or_attr(p, node, 3, "axes") if (len(node.input) > 3 and node.input[3]) or "axes" in attrs(node) else None
    if starts is None:
        raise Unsupported("Slice without starts")
    axes = [a % r for a in (axes if axes is not None else range(len(starts)))]
    if any(_factor_alone(lay, a) is not None for a in axes):
        raise Unsupported("Slice of a channel factor")
    new = tuple(_opaque_axis(p, node.output[0], k) if k in axes else ax for k, ax in enumerate(lay.axes))
    put(p, node.output[0], Layout(lay.ids, new))


def copy(p: Propagation, node: onnx.NodeProto, not_axis: int | None = None) -> None:
    """An op that keeps every position where it is (activation, Cast, Softmax over an axis `not_axis` that
    holds no channels): each output gets the input's layout."""
    lay = layout_of(p, node.input[0])
    if not_axis is not None and lay.axes[not_axis % len(lay.axes)] and any(
            a.factor >= 0 for a in lay.axes[not_axis % len(lay.axes)]):
        raise Unsupported(f"{node.op_type} over a channel axis")
    for o in node.output:
        if o:
            put(p, o, lay)


def elementwise(p: Propagation, node: onnx.NodeProto) -> None:
    """Element-wise op over factored tensors: identically laid-out activations are united position-wise;
    every other operand (a scalar scale, a run-time scalar) must be size 1 on every axis holding channels."""
    inputs = [i for i in node.input if i]
    r_out = rank(p, node.output[0]) or max(rank(p, i) or 0 for i in inputs)
    laid = [i for i in inputs if p.ids(i) is not None]
    lays = [layout_of(p, i) for i in laid]
    first = lays[0]
    if len(first.axes) != r_out:
        raise Unsupported("a factored operand is broadcast to a higher rank")
    for other in lays[1:]:
        same = len(other.axes) == r_out and other.ids.shape == first.ids.shape and all(
            [a.factor for a in x] == [a.factor for a in y] for x, y in zip(first.axes, other.axes, strict=True))
        if not same:
            raise Unsupported("operands carry channels in different layouts")
        p.unite([int(v) for v in first.ids.reshape(-1)], [int(v) for v in other.ids.reshape(-1)])
    caxes = set(first.channel_axes())
    for name in inputs:
        if name in laid:
            continue
        shape = p.shape(name)
        if shape is None:
            raise Unsupported(f"unknown shape of {name!r}")
        for k, d in enumerate(shape):
            if r_out - len(shape) + k in caxes and d != 1:
                raise Unsupported(f"operand {name!r} varies along a channel axis of a factored tensor")
    out_shape = p.shape(node.output[0]) or []
    axes = tuple(_opaque_axis(p, node.output[0], k) if k < len(out_shape) and isinstance(out_shape[k], int)
                 and mono_prod([a.size for a in ax]).static != out_shape[k] else ax for k, ax in enumerate(first.axes))
    put(p, node.output[0], Layout(first.ids, axes))
