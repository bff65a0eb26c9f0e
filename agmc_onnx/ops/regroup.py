"""Reshape over factored layouts (ops/factors.py): atoms split and merge, and the target entries that hold
channels are rewritten at surgery (ShapeChannel for channels on one axis, ReshapeFactors for heads)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx

from agmc_onnx.ops.atoms import ONE, Atom, Layout, Mono, Plain, divides, mono_prod
from agmc_onnx.ops.common import attrs
from agmc_onnx.ops.context import Propagation, Surgery
from agmc_onnx.ops.factors import layout_of, put
from agmc_onnx.ops.registry import Unsupported

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class ShapeChannel:
    """Reshape/Expand target `shape`: entry `index` becomes the kept width of `tensor` (the node's output),
    divided by `divisor` for the C/g entry of a channel shuffle's split."""

    tensor: str
    shape: str
    index: int
    divisor: int = 1

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Write the kept width into the shape constant."""
        shape = s.const(self.shape).copy()
        shape.reshape(-1)[self.index] = s.new_len(self.tensor) // int(self.divisor)
        s.set_const(self.shape, shape)


@dataclass(frozen=True)
class ReshapeFactors:
    """Reshape target `shape` of output `tensor` (factored, factor sizes `fshape`): each listed entry holds
    channel factors and becomes its old value / their sizes * their kept counts. The kept positions must be
    a product set over the factors (whole heads); anything else cannot be reshaped, so it raises ValueError."""

    tensor: str
    shape: str
    fshape: tuple[int, ...]
    entries: tuple[tuple[int, tuple[int, ...]], ...]

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Write the kept sizes into the target constant."""
        counts = factor_counts(s.keep_mask(self.tensor), self.fshape, self.tensor)
        shape = s.const(self.shape).copy()
        flat = shape.reshape(-1)
        for idx, facs in self.entries:
            full = int(np.prod([self.fshape[f] for f in facs]))
            flat[idx] = int(flat[idx]) // full * int(np.prod([counts[f] for f in facs]))
        s.set_const(self.shape, shape)


def factor_counts(mask: np.ndarray, fshape: tuple[int, ...], tensor: str) -> list[int]:
    """Kept count along each factor of a keep mask over factored positions; it must be a product set."""
    m = mask.reshape(fshape)
    per = [m.any(axis=tuple(a for a in range(m.ndim) if a != f)) for f in range(m.ndim)]
    outer = per[0]
    for v in per[1:]:
        outer = np.multiply.outer(outer, v)
    if not np.array_equal(outer.reshape(m.shape), m) or not all(v.any() for v in per):
        raise ValueError(f"the kept channels of {tensor!r} are not whole units of its factors {fshape}: "
                        "no reshape can hold them")
    return [int(v.sum()) for v in per]


def _target_dims(lay: Layout, target: list[int], allowzero: int) -> list[Mono]:
    """Output dims of a Reshape target, -1 and 0 entries resolved against the input layout."""
    total = mono_prod([a.size for ax in lay.axes for a in ax])
    dims: list[Mono | None] = []
    for j, v in enumerate(target):
        if v == 0 and not allowzero:
            if j >= len(lay.axes):
                raise Unsupported("Reshape copies a dim the input does not have")
            dims.append(lay.axis_size(j))
        elif v == -1:
            dims.append(None)
        elif v > 0:
            dims.append(Mono(Fraction(v)))
        else:
            raise Unsupported("Reshape to an empty shape")
    if dims.count(None) > 1:
        raise Unsupported("Reshape target with two -1 entries")
    if None in dims:
        rest = total / mono_prod([d for d in dims if d is not None])
        if not rest.valid:
            raise Unsupported("Reshape target does not divide the input")
        dims[dims.index(None)] = rest
    out = [d for d in dims if d is not None]
    if mono_prod(out) != total:
        raise Unsupported("Reshape target does not match the input size")
    return out


def _walk(src: list[Atom], dims: list[Mono]) -> tuple[list[list[Mono]], list[list[tuple[int, int]]]]:
    """Match output dims against source atoms, splitting atoms where a dim ends inside one: the pieces of each
    source atom (outer first), and per output dim its (source atom, piece) list."""
    pieces: list[list[Mono]] = [[] for _ in src]
    entries: list[list[tuple[int, int]]] = []
    i, rest = 0, src[0].size if src else ONE
    for d in dims:
        entry: list[tuple[int, int]] = []
        need = d
        while not need.one:
            if i >= len(src):
                raise Unsupported("Reshape target does not match the input size")
            if divides(rest, need):  # the rest of this atom ends inside (or at the end of) the dim
                entry.append((i, len(pieces[i])))
                pieces[i].append(rest)
                need = need / rest
                i += 1
                rest = src[i].size if i < len(src) else ONE
            elif divides(need, rest):  # the dim ends inside this atom: split it
                if src[i].factor >= 0 and (need.static is None or (rest / need).static is None):
                    raise Unsupported("Reshape splits channels unevenly")
                entry.append((i, len(pieces[i])))
                pieces[i].append(need)
                rest = rest / need
                need = ONE
            else:
                raise Unsupported("Reshape regroups channels with other axes")
        entries.append(entry)
    while i < len(src):  # trailing size-1 atoms
        if not rest.one or not entries:
            raise Unsupported("Reshape target does not match the input size")
        entries[-1].append((i, len(pieces[i])))
        pieces[i].append(rest)
        i += 1
        rest = src[i].size if i < len(src) else ONE
    return pieces, entries


def reshape(p: Propagation, node: onnx.NodeProto) -> None:
    """Reshape of a tensor whose channels sit off axis 1 or over several axes: atoms split and merge (heads
    out of the hidden dim, windows out of the tokens, heads into the batch and back); every target entry
    that holds channels is rewritten at surgery to the kept count."""
    x = node.input[0]
    lay = layout_of(p, x)
    target_c = p.const(node.input[1])
    if target_c is None:
        raise Unsupported("Reshape target shape computed at run time")
    target = [int(v) for v in target_c.reshape(-1)]
    allowzero = int(attrs(node).get("allowzero", 0))
    dims = _target_dims(lay, target, allowzero)
    src = [a for ax in lay.axes for a in ax]
    pieces, entries = _walk(src, dims)
    # new ids: each channel atom (factors are in memory order) reshaped into its pieces
    sizes: list[int] = []
    new_factor: dict[tuple[int, int], int] = {}
    for i, a in enumerate(src):
        if a.factor >= 0:
            for k, piece in enumerate(pieces[i]):
                new_factor[(i, k)] = len(sizes)
                sizes.append(int(piece.static or 0))
    ids = np.asarray(lay.ids).reshape(sizes)
    axes = tuple(tuple(Atom(pieces[i][k], new_factor.get((i, k), -1)) for i, k in entry) for entry in entries)
    out = put(p, node.output[0], Layout(ids, axes))
    _reshape_hook(p, node, out, target)


def _reshape_hook(p: Propagation, node: onnx.NodeProto, out: Layout | Plain, target: list[int]) -> None:
    """The surgery rewrite of the target entries that hold channels (-1 and 0 entries follow by themselves)."""
    if isinstance(out, Plain):
        if target[out.axis] > 0 and len(set(out.ids)) > 1:
            p.hook(node, ShapeChannel(node.output[0], node.input[1], out.axis))
        return
    entries = []
    for k, ax in enumerate(out.axes):
        facs = tuple(a.factor for a in ax if a.factor >= 0)
        if facs and target[k] > 0:
            entries.append((k, facs))
    if entries:
        p.hook(node, ReshapeFactors(node.output[0], node.input[1], tuple(int(d) for d in out.ids.shape), tuple(entries)))
