"""The data of a factored channel layout (ops/factors.py): sizes as monomials in the batch, atoms, layouts
and their canonical form. Plain data and numpy only, so the propagation Protocol can name the types."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Mono:
    """A dim as coef * U**e: static (e=0) or proportional to the one run-time dim U (e=1)."""

    coef: Fraction
    e: int = 0

    @staticmethod
    def of(d: Any) -> Mono:
        """A static int dim, or U for a symbolic/unknown one."""
        return Mono(Fraction(int(d))) if isinstance(d, (int, np.integer)) else Mono(Fraction(1), 1)

    def __mul__(self, o: Mono) -> Mono:
        return Mono(self.coef * o.coef, self.e + o.e)

    def __truediv__(self, o: Mono) -> Mono:
        return Mono(self.coef / o.coef, self.e - o.e)

    @property
    def valid(self) -> bool:
        """A size a tensor axis can have: positive, U at most once, an integer when static."""
        return self.e in (0, 1) and self.coef > 0 and (self.e == 1 or self.coef.denominator == 1)

    @property
    def one(self) -> bool:
        """Size 1."""
        return self.e == 0 and self.coef == 1

    @property
    def static(self) -> int | None:
        """The size as an int when static."""
        return int(self.coef) if self.e == 0 and self.coef.denominator == 1 else None


ONE = Mono(Fraction(1))


def mono_prod(monos: list[Mono]) -> Mono:
    """Product of monomials."""
    out = ONE
    for m in monos:
        out = out * m
    return out


def divides(a: Mono, b: Mono) -> bool:
    """a divides b: b / a is a valid size."""
    return (b / a).valid


@dataclass(frozen=True)
class Atom:
    """A row-major part of one axis: its size, and the id factor it spans (-1: no channels)."""

    size: Mono
    factor: int = -1


@dataclass(frozen=True, eq=False)
class Layout:
    """Ids with one dimension per channel factor, and per tensor axis the atoms that make it up."""

    ids: np.ndarray
    axes: tuple[tuple[Atom, ...], ...]

    def axis_size(self, k: int) -> Mono:
        """Size of axis k."""
        return mono_prod([a.size for a in self.axes[k]])

    def channel_axes(self) -> list[int]:
        """Axes that hold channel atoms."""
        return [k for k, ax in enumerate(self.axes) if any(a.factor >= 0 for a in ax)]

    def factor_axis(self, f: int) -> int:
        """The axis holding factor f."""
        return next(k for k, ax in enumerate(self.axes) if any(a.factor == f for a in ax))


@dataclass(frozen=True)
class Plain:
    """A canonical layout that is an ordinary id list on one axis."""

    ids: list[int]
    axis: int


def canonical(lay: Layout) -> Layout | Plain:
    """The canonical form of a layout (module docstring)."""
    ids = np.asarray(lay.ids)
    axes = [list(ax) for ax in lay.axes]
    # factors of size 1, and factors along which the ids do not vary, hold no channel structure: opaque
    for f in range(ids.ndim):
        if ids.shape[f] == 1 or bool((ids == ids.take([0], axis=f)).all()):
            axes = [[Atom(a.size) if a.factor == f else a for a in ax] for ax in axes]
    chans = [(k, j) for k, ax in enumerate(axes) for j, a in enumerate(ax) if a.factor >= 0]
    used = [axes[k][j].factor for k, j in chans]
    if not used:  # every position holds the same id (one channel): that id along the axis that held it
        k = next(k for k, ax in enumerate(lay.axes) if any(a.factor >= 0 for a in ax))
        return _plain_single(ids, axes, k)
    dead = [f for f in range(ids.ndim) if f not in used]
    ids = ids[tuple(0 if f in dead else slice(None) for f in range(ids.ndim))]
    order = [f - sum(d < f for d in dead) for f in used]
    ids = ids.transpose(order)  # factors in memory order
    new_axes: list[tuple[Atom, ...]] = []
    sizes: list[int] = []
    for ax in axes:
        out: list[Atom] = []
        for a in ax:
            if a.size.one:
                continue
            if a.factor >= 0:
                n = int(a.size.static or 0)
                if out and out[-1].factor >= 0:  # merge with the channel atom before it
                    sizes[-1] *= n
                    out[-1] = Atom(Mono(Fraction(sizes[-1])), len(sizes) - 1)
                else:
                    sizes.append(n)
                    out.append(Atom(a.size, len(sizes) - 1))
            else:
                out.append(a)
        new_axes.append(tuple(out))
    ids = ids.reshape(sizes)
    lay = Layout(ids, tuple(new_axes))
    caxes = lay.channel_axes()
    if len(caxes) == 1 and all(a.factor >= 0 or a.size.static is not None for a in lay.axes[caxes[0]]):
        return _plain(lay, caxes[0])
    return lay


def _plain(lay: Layout, k: int) -> Plain:
    """Axis k's per-position ids (channel atoms there in memory order, repeated over its static atoms)."""
    atoms = lay.axes[k]
    sizes = [int(a.size.static or 0) for a in atoms]
    ids = lay.ids
    for j, a in enumerate(atoms):
        if a.factor < 0:
            ids = np.expand_dims(ids, j)
    return Plain([int(v) for v in np.broadcast_to(ids, sizes).reshape(-1)], k)


def _plain_single(ids: np.ndarray, axes: list[list[Atom]], k: int) -> Plain:
    """A layout whose positions all carry one id: that id repeated along axis k."""
    n = mono_prod([a.size for a in axes[k]]).static
    if n is None:
        raise ValueError("one channel merged with a run-time axis")
    return Plain([int(ids.reshape(-1)[0])] * n, k)
