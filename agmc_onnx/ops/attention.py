"""Attention: products of two activations (q k^T, attention x v), written as MatMul or Einsum.

Each operand axis is named by a letter (einsum style; MatMul broadcasts its batch axes): a letter in both
operands and the output is a batch axis, in both operands only a contracted one, in one operand and the
output a free one. Channels on a batch axis of both operands are attention HEADS: every id of head h in
either operand becomes one class (whole heads: a head's q, k and v rows and its out-projection columns go
together), so the producer's group has one channel per head. Channels on a contracted axis (the head dim
of q against k) are united position-wise; channels on a free axis (v's head dim) pass to the output.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import onnx

from agmc_onnx.ops.atoms import Atom, Layout, Mono
from agmc_onnx.ops.common import attrs, rank
from agmc_onnx.ops.context import Propagation
from agmc_onnx.ops.factors import layout_of, put
from agmc_onnx.ops.registry import Unsupported, rule


def _factor_map(lay: Layout | None, letters: str) -> dict[str, int]:
    """Letter -> the channel factor on that axis (an axis holding channels must hold nothing else)."""
    if lay is None:
        return {}
    if len(lay.axes) != len(letters):
        raise Unsupported("operand rank does not match the product")
    out = {}
    for k, letter in enumerate(letters):
        facs = [a.factor for a in lay.axes[k] if a.factor >= 0]
        if facs:
            if len(lay.axes[k]) != 1:
                raise Unsupported("a product over an axis that mixes channels with other dims")
            out[letter] = facs[0]
    return out


def _front(ids: np.ndarray, facs: list[int]) -> np.ndarray:
    """Ids with the given factors first, flattened to (their positions, the rest)."""
    rest = [f for f in range(ids.ndim) if f not in facs]
    moved = ids.transpose(facs + rest)
    return moved.reshape(int(np.prod([ids.shape[f] for f in facs])) if facs else 1, -1)


def _unite_all(p: Propagation, ids: list[int]) -> None:
    """Unite every id of a list into one class."""
    if len(ids) > 1:
        p.unite([ids[0]] * (len(ids) - 1), ids[1:])


def contract(p: Propagation, node: onnx.NodeProto, a: str, la: str, b: str, lb: str, lo: str) -> None:
    """The product of operands a (axes named la) and b (lb) into the output (lo): unite heads and contracted
    channels, lay the output's channels out (module docstring)."""
    lays = {n: (layout_of(p, n) if p.ids(n) is not None else None) for n in (a, b)}
    fa, fb = _factor_map(lays[a], la), _factor_map(lays[b], lb)
    shapes = {a: p.shape(a), b: p.shape(b)}
    matched, contracted, out_f = [], [], {}
    for letter in dict.fromkeys(list(fa) + list(fb)):
        in_a, in_b, in_o = letter in la, letter in lb, letter in lo
        if in_a and in_b and in_o:  # batch axis
            if letter in fa and letter in fb:
                if lays[a].ids.shape[fa[letter]] != lays[b].ids.shape[fb[letter]]:  # type: ignore[union-attr]
                    raise Unsupported("heads of different counts meet")
                matched.append(letter)
            else:
                other, lo_letters = (b, lb) if letter in fa else (a, la)
                shape = shapes[other]
                if shape is None or shape[lo_letters.index(letter)] != 1:
                    raise Unsupported("channels meet a batch axis that does not hold them")
            out_f[letter] = "a" if letter in fa else "b"
        elif in_a and in_b:  # contracted
            if letter not in fa or letter not in fb:
                raise Unsupported("a product sums channels against other dims")
            if lays[a].ids.shape[fa[letter]] != lays[b].ids.shape[fb[letter]]:  # type: ignore[union-attr]
                raise Unsupported("contracted channels of different widths")
            contracted.append(letter)
        elif in_o:
            out_f[letter] = "a" if letter in fa else "b"
        else:
            raise Unsupported("a product sums channels of one operand")
    ia, ib = lays[a], lays[b]
    if matched:  # whole heads: every id of head h in either operand is one class
        ua = _front(ia.ids, [fa[x] for x in matched])  # type: ignore[union-attr]
        ub = _front(ib.ids, [fb[x] for x in matched])  # type: ignore[union-attr]
        for row_a, row_b in zip(ua, ub, strict=True):
            _unite_all(p, [int(v) for v in row_a] + [int(v) for v in row_b])
    elif contracted:
        if set(fa) != set(contracted) or set(fb) != set(contracted):
            raise Unsupported("contracted channels next to other channels")
        p.unite([int(v) for v in _front(ia.ids, [fa[x] for x in contracted]).reshape(-1)],  # type: ignore[union-attr]
                [int(v) for v in _front(ib.ids, [fb[x] for x in contracted]).reshape(-1)])  # type: ignore[union-attr]
    free_a = [x for x in out_f if x in fa and x not in lb]
    free_b = [x for x in out_f if x in fb and x not in la]
    if free_a and free_b:
        raise Unsupported("a product of channels with channels (an outer product)")
    side, src, letters, fmap = (("b", b, lb, fb) if free_b or not fa else ("a", a, la, fa))
    if any(out_f[x] != side and x not in matched for x in out_f):
        raise Unsupported("output channels from both operands")
    if not out_f:
        return  # no channels reach the output (single-head scores)
    lay = lays[src]
    assert lay is not None
    ids = lay.ids[tuple(0 if f in [fmap[x] for x in contracted] else slice(None) for f in range(lay.ids.ndim))]
    kept = [f for f in range(lay.ids.ndim) if f not in [fmap[x] for x in contracted]]
    renum = {f: k for k, f in enumerate(kept)}
    out_shape = p.shape(node.output[0])
    axes = []
    for k, letter in enumerate(lo):
        if letter in out_f:
            f = renum[fmap[letter]]
            axes.append((Atom(Mono(Fraction(ids.shape[f])), f),))
        else:
            axes.append(_opaque(letter, k, out_shape, [(lays[a], la), (lays[b], lb)], shapes, (a, b), (la, lb)))
    put(p, node.output[0], Layout(ids, tuple(axes)))


def _opaque(letter: str, k: int, out_shape: list | None, lays: list, shapes: dict, names: tuple, letters: tuple
            ) -> tuple[Atom, ...]:
    """Atoms of an output axis without channels: its static size, else the operands' (run-time) size."""
    if out_shape is not None and k < len(out_shape) and isinstance(out_shape[k], int):
        return () if out_shape[k] == 1 else (Atom(Mono(Fraction(out_shape[k]))),)
    for (lay, lt), name in zip(lays, names, strict=True):
        if letter not in lt:
            continue
        j = lt.index(letter)
        if lay is not None:
            size = lay.axis_size(j)
        else:
            shape = shapes[name]
            if shape is None:
                continue
            size = Mono.of(shape[j])
        if not size.one:
            return (Atom(size),)
    return ()


def matmul(p: Propagation, node: onnx.NodeProto) -> None:
    """MatMul of two activations (numpy semantics, ranks >= 2): batch axes broadcast from the right."""
    a, b = node.input[0], node.input[1]
    ra, rb = rank(p, a), rank(p, b)
    if ra is None or rb is None or ra < 2 or rb < 2:
        raise Unsupported("MatMul of two activations of unknown or vector rank")
    nb = max(ra, rb) - 2
    batch = "ABCDEFGHIJ"[:nb]
    contract(p, node, a, batch[nb - (ra - 2):] + "mk", b, batch[nb - (rb - 2):] + "kn", batch + "mn")


@rule("Einsum", any_axis=True, layout_aware=True)
def einsum(p: Propagation, node: onnx.NodeProto) -> None:
    """Einsum of two operands with an explicit output (MaxViT's attention): as a MatMul over named axes."""
    raw = attrs(node).get("equation", b"")
    eq = (raw.decode() if isinstance(raw, bytes) else str(raw)).replace(" ", "")
    if "->" not in eq or len([i for i in node.input if i]) != 2:
        raise Unsupported("Einsum without an explicit output or not of two operands")
    lhs, lo = eq.split("->")
    parts = lhs.split(",")
    ranks = [rank(p, n) for n in node.input[:2]]
    if len(parts) != 2 or any(r is None for r in ranks) or not all(re.fullmatch(r"[a-zA-Z.]*", x) for x in parts + [lo]):
        raise Unsupported("Einsum equation not understood")
    ell = max((r or 0) - len(x.replace("...", "")) for x, r in zip(parts, ranks, strict=True))
    pool = "0123456789"[:max(ell, 0)]

    def expand(x: str, r: int) -> str:
        n = r - len(x.replace("...", ""))
        return x.replace("...", pool[len(pool) - n:] if n else "")

    la, lb = (expand(x, r or 0) for x, r in zip(parts, ranks, strict=True))
    lo = lo.replace("...", pool)
    if len(set(la)) != len(la) or len(set(lb)) != len(lb) or len(la) != ranks[0] or len(lb) != ranks[1]:
        raise Unsupported("Einsum with a repeated index (a trace or diagonal)")
    contract(p, node, node.input[0], la, node.input[1], lb, lo)
