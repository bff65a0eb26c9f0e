"""Ops that move, cut, join or pick along the channel axis: Transpose, (Un)Squeeze, Tile, Concat, Split,
Slice, Gather, Flatten; Split/Slice/Gather carry the rewrites of their sizes, bounds and indices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from agmc_onnx.ops import factors
from agmc_onnx.ops.common import attrs, const_or_attr, inp, rank, tracked
from agmc_onnx.ops.context import Propagation, Surgery
from agmc_onnx.ops.registry import Unsupported, rule

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


def _kept_positions(s: Surgery, tensor: str, positions: tuple[int, ...]) -> list[int]:
    """Positions (in the pruned tensor) of the original positions that are kept, in the same order."""
    keep = s.keep_mask(tensor)
    new_pos = np.cumsum(keep) - 1
    return [int(new_pos[i]) for i in positions if keep[i]]


def _plain_or_factored(plain: Callable[[Propagation, onnx.NodeProto], None],
                       factored: Callable[[Propagation, onnx.NodeProto], None], p: Propagation,
                       node: onnx.NodeProto) -> None:
    """The factored rule for a factored input; else the plain rule, and the factored one where it refuses (the
    plain rule's reason stands when both do)."""
    if p.layout(node.input[0]) is not None:
        factored(p, node)
        return
    try:
        plain(p, node)
    except Unsupported as exc:
        try:
            factored(p, node)
        except Unsupported:
            raise exc from None


@rule("Transpose", any_axis=True, split_aware=True, layout_aware=True)
def transpose(p: Propagation, node: onnx.NodeProto) -> None:
    """Transpose moves the channel axis to where `perm` puts it (NCHW <-> NHWC, tokens); a channel axis
    split in two (g, C/g) may only have its two halves swapped (the shuffle: a fixed permutation of ids);
    a factored layout's axes follow `perm` (ops/factors.py)."""
    if p.layout(node.input[0]) is not None:
        factors.transpose(p, node)
        return
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    perm = attrs(node).get("perm")
    if perm is None:
        if r is None:
            raise Unsupported("Transpose of unknown rank")
        perm = list(range(r))[::-1]
    perm = [int(a) for a in perm]
    if t not in perm:
        raise Unsupported("Transpose perm does not match the rank")
    split = p.split(node.input[0])
    if split is None:
        p.set(node.output[0], ids, perm.index(t))
        return
    d0, d1 = split
    others = [k for k in range(len(perm)) if k not in (t, t + 1)]
    if any(perm[k] != k for k in others):
        raise Unsupported("Transpose moves a split channel axis")
    if perm[t] == t and perm[t + 1] == t + 1:
        p.set(node.output[0], ids, t, split)
    elif perm[t] == t + 1 and perm[t + 1] == t:  # channel shuffle: position (i, j) -> (j, i)
        grid = np.array(ids, dtype=np.int64).reshape(d0, d1)
        p.set(node.output[0], [int(v) for v in grid.T.reshape(-1)], t, (d1, d0))
    else:
        raise Unsupported("Transpose of a split channel axis")


@rule("Squeeze", "Unsqueeze", any_axis=True, layout_aware=True)
def squeeze(p: Propagation, node: onnx.NodeProto) -> None:
    """The plain rule below; a factored layout, or an axis it refuses that is not the batch (a size-1 or q|k|v
    first axis), goes to ops/factors.py."""
    _plain_or_factored(_squeeze_plain, factors.squeeze, p, node)


def _squeeze_plain(p: Propagation, node: onnx.NodeProto) -> None:
    """(Un)squeezing axes other than the batch and channel axes; the channel axis shifts with them."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    axes = const_or_attr(p, node, 1, "axes")
    rin, rout = rank(p, node.input[0]), rank(p, node.output[0])
    if axes is None:
        shape = p.shape(node.input[0])
        if node.op_type == "Unsqueeze" or shape is None or any(not isinstance(d, int) for d in shape[1:]):
            raise Unsupported(f"{node.op_type} without axes")
        if not isinstance(shape[0], int) or shape[0] == 1 or shape[t] == 1:
            raise Unsupported("Squeeze without axes of a tensor whose batch or channel axis may be 1")
        axes = [k for k, d in enumerate(shape) if d == 1]
    r = rout if node.op_type == "Unsqueeze" else rin
    if r is None:
        raise Unsupported(f"{node.op_type} of unknown rank")
    axes = sorted({a % r for a in axes})
    if node.op_type == "Squeeze":
        if 0 in axes or t in axes:
            raise Unsupported("Squeeze of the batch or channel axis")
        new_t = t - sum(a < t for a in axes)
    else:
        if 0 in axes:
            raise Unsupported("Unsqueeze before the batch axis")
        kept = [k for k in range(r) if k not in axes]  # output positions of the input's axes, in order
        if t >= len(kept):
            raise Unsupported("Unsqueeze axes do not match the rank")
        new_t = kept[t]
    p.set(node.output[0], ids, new_t)


@rule("Tile", any_axis=True)
def tile(p: Propagation, node: onnx.NodeProto) -> None:
    """Tiling spatial axes passes channels through."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    reps = p.const(node.input[1])
    if reps is None or len(reps) <= t or int(reps[t]) != 1 or int(reps[0]) != 1:
        raise Unsupported("Tile repeats the batch or channel axis")
    p.set(node.output[0], ids, t)


@rule("Concat", any_axis=True)
def concat(p: Propagation, node: onnx.NodeProto) -> None:
    """Concat on the channel axis joins the id lists; on another axis it unites them."""
    r = rank(p, node.output[0])
    inputs = [i for i in node.input if i]
    tracked = [n for n in inputs if p.ids(n) is not None]
    if r is None or r < 2:
        raise Unsupported("Concat of unknown rank")
    axis = int(attrs(node).get("axis", 1)) % r
    t = p.axis(tracked[0])
    if any(p.axis(n) != t for n in tracked):
        raise Unsupported("Concat inputs carry channels on different axes")
    if axis == t:
        out: list[int] = []
        for name in inputs:
            ids = p.ids(name)
            if ids is None:
                raise Unsupported(f"Concat of a non-activation {name!r} on the channel axis")
            out += ids
        p.set(node.output[0], out, t)
        return
    base = p.ids(tracked[0])
    assert base is not None
    for other in tracked[1:]:
        ids = p.ids(other)
        assert ids is not None
        if len(ids) != len(base):
            raise Unsupported("Concat inputs differ in channels")
        p.unite(base, ids)
    for name in inputs:
        if p.ids(name) is None:
            c, reader = p.const(name), node
            if c is None:
                name, reader = _expanded_const(p, name, t, r)
                c = p.const(name)
            if c is None or c.ndim > r:
                raise Unsupported(f"Concat operand {name!r} computed at run time")
            ax = t - (r - c.ndim)
            if ax < 0 or c.shape[ax] != len(base):
                raise Unsupported(f"Concat operand {name!r} does not match the channels")
            p.member(name, reader, ax, "norm", base)
    p.set(node.output[0], base, t)


def _expanded_const(p: Propagation, name: str, t: int, r: int) -> tuple[str, onnx.NodeProto]:
    """The constant behind a run-time Concat operand that is only that constant expanded over other axes (a
    class token expanded over the batch), and the Expand reading it; the Expand's shape must be 1 on the
    channel axis (so the sliced constant still broadcasts)."""
    from agmc_onnx.ops.reshape import shape_entries

    src = p.model.producer.get(name)
    while src is not None and src.op_type in ("Identity", "Cast"):
        src = p.model.producer.get(src.input[0])
    if src is None or src.op_type != "Expand" or p.const(src.input[0]) is None:
        raise Unsupported(f"Concat operand {name!r} computed at run time")
    entries = shape_entries(p, src.input[1])
    if entries is None or len(entries) != r or entries[t] != 1:
        raise Unsupported(f"Concat operand {name!r} expands the channel axis")
    return src.input[0], src


@dataclass(frozen=True)
class SplitSizes:
    """Split on channels: explicit sizes become the kept channels of each output (`sizes` cut `tensor`)."""

    tensor: str
    sizes: tuple[int, ...]

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Write the kept sizes as the `split` input (opset >= 13) or attribute; drop `num_outputs`."""
        keep = s.keep_mask(self.tensor)
        sizes, off = [], 0
        for n in self.sizes:
            sizes.append(int(keep[off : off + n].sum()))
            off += n
        arr = np.array(sizes, dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if s.opset >= 13:
            if len(node.inputs) > 1 and node.inputs[1].name:  # the rule read the sizes from this constant
                s.set_const(node.inputs[1].name, arr)
            elif len(node.inputs) < 2:
                node.inputs.append(s.fresh_const(f"{node.name}_split", arr))
            else:
                node.inputs[1] = s.fresh_const(f"{node.name}_split", arr)
        else:
            node.attrs["split"] = sizes


@rule("Split", any_axis=True, layout_aware=True)
def split(p: Propagation, node: onnx.NodeProto) -> None:
    """The plain rule below; a factored layout, or an axis it refuses that is not the batch (a size-1 or q|k|v
    first axis), goes to ops/factors.py."""
    _plain_or_factored(_split_plain, factors.split, p, node)


def _split_plain(p: Propagation, node: onnx.NodeProto) -> None:
    """Split on the channel axis cuts the id list (sizes rewritten at surgery); otherwise copies it."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    axis = int(attrs(node).get("axis", 0)) % (r or 1)
    outs = [o for o in node.output]
    if axis != t:
        if axis == 0:
            raise Unsupported("Split on the batch axis")
        for o in outs:
            if o:
                p.set(o, ids, t)
        return
    sizes = const_or_attr(p, node, 1, "split")
    if sizes is None:
        n = len(outs)
        if len(ids) % n:
            raise Unsupported("uneven Split without sizes")
        sizes = [len(ids) // n] * n
    if sum(sizes) != len(ids) or len(sizes) != len(outs):
        raise Unsupported("Split sizes do not match the channels")
    off = 0
    for o, s in zip(outs, sizes, strict=True):
        if o:
            p.set(o, ids[off : off + s], t)
        off += s
    p.hook(node, SplitSizes(node.input[0], tuple(sizes)))


def _slice_positions(n: int, start: int, end: int, step: int) -> list[int]:
    """Positions ONNX Slice takes from an axis of length n (negative bounds and steps as the spec clamps them)."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        return list(range(max(0, min(n, start)), max(0, min(n, end)), step))
    return list(range(max(0, min(n - 1, start)), max(-1, min(n - 1, end)), step))


@dataclass(frozen=True)
class SliceChannel:
    """Slice (step 1) on channels: bound `index` becomes the kept channels of `tensor` before `start`/`end`."""

    tensor: str
    start: int
    end: int
    index: int

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Rewrite starts/ends (attributes before opset 10, constant inputs after)."""
        keep = s.keep_mask(self.tensor)
        start = int(keep[: self.start].sum())
        end = int(keep[: self.end].sum())
        k = self.index
        if "starts" in node.attrs:
            st, en = list(node.attrs["starts"]), list(node.attrs["ends"])
            st[k], en[k] = start, end
            node.attrs["starts"], node.attrs["ends"] = st, en
            return
        for idx, val in ((1, start), (2, end)):
            arr = s.const(node.inputs[idx].name).copy()
            arr.reshape(-1)[k] = val
            s.set_const(node.inputs[idx].name, arr)


@dataclass(frozen=True)
class SliceToGather:
    """Strided Slice on channels: becomes a Gather of the kept `positions` of `tensor` on `axis` (a stride
    has no pruned form)."""

    tensor: str
    positions: tuple[int, ...]
    axis: int

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Turn the node into Gather(data, kept positions, axis)."""
        idx = np.array(_kept_positions(s, self.tensor, self.positions), dtype=np.int64)
        data = node.inputs[0]
        node.inputs.clear()
        node.inputs.extend([data, s.fresh_const(f"{node.name}_indices", idx)])
        node.attrs = {"axis": int(self.axis)}
        node.op = "Gather"


@rule("Slice", any_axis=True, layout_aware=True)
def slice_(p: Propagation, node: onnx.NodeProto) -> None:
    """The plain rule below; a factored layout, or an axis it refuses that is not the batch (a size-1 or q|k|v
    first axis), goes to ops/factors.py."""
    _plain_or_factored(_slice_plain, factors.slice_, p, node)


def _slice_plain(p: Propagation, node: onnx.NodeProto) -> None:
    """Slice on the channel axis cuts the id list: step 1 rewrites starts/ends at surgery; any other step
    (strided or reversed, the only sliced axis) becomes a Gather of the kept positions."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    if r is None:
        raise Unsupported("Slice of unknown rank")
    starts = const_or_attr(p, node, 1, "starts")
    ends = const_or_attr(p, node, 2, "ends")
    axes = const_or_attr(p, node, 3, "axes") if (inp(node, 3) or "axes" in attrs(node)) else None
    steps = const_or_attr(p, node, 4, "steps") if inp(node, 4) else None
    if starts is None or ends is None:
        raise Unsupported("Slice without starts/ends")
    axes = list(range(len(starts))) if axes is None else axes
    axes = [a % r for a in axes]
    if 0 in axes:
        raise Unsupported("Slice on the batch axis")
    if t not in axes:
        p.set(node.output[0], ids, t)
        return
    k = axes.index(t)
    step = 1 if steps is None else steps[k]
    n = len(ids)
    pos = _slice_positions(n, starts[k], ends[k], step)
    if not pos:
        raise Unsupported("empty Slice")
    p.set(node.output[0], [ids[i] for i in pos], t)
    if step == 1:
        p.hook(node, SliceChannel(node.input[0], pos[0], pos[-1] + 1, k))
    elif len(axes) == 1:
        p.hook(node, SliceToGather(node.input[0], tuple(pos), t))
    else:
        raise Unsupported("strided Slice on the channel axis together with other axes")


@dataclass(frozen=True)
class GatherChannel:
    """Gather on channels: the constant `indices` become the pruned positions of the kept gathered
    `positions` of `tensor`."""

    tensor: str
    positions: tuple[int, ...]
    indices: str

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Wire a fresh indices constant (same rank and dtype) into input 1."""
        old = s.const(self.indices)
        new = np.array(_kept_positions(s, self.tensor, self.positions), dtype=old.dtype)
        if old.ndim == 0:
            new = new.reshape(())
        node.inputs[1] = s.fresh_const(f"{node.name}_indices", new)


@rule("Gather", any_axis=True, layout_aware=True)
def gather(p: Propagation, node: onnx.NodeProto) -> None:
    """The plain rule below; a factored layout, or an axis it refuses that is not the batch (a size-1 or q|k|v
    first axis), goes to ops/factors.py."""
    _plain_or_factored(_gather_plain, factors.gather, p, node)


def _gather_plain(p: Propagation, node: onnx.NodeProto) -> None:
    """Gather with constant indices: on another axis the channel axis shifts; on the channel axis a 1-D
    index picks ids (rewritten at surgery), a scalar index keeps one channel (frozen: it must stay)."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    idx = p.const(inp(node, 1))
    if idx is None or r is None:
        raise Unsupported("Gather indices computed at run time")
    axis = int(attrs(node).get("axis", 0)) % r
    if axis == 0:
        raise Unsupported("Gather on the batch axis")
    if axis != t:
        p.set(node.output[0], ids, t if axis > t else t - 1 + idx.ndim)
        return
    n = len(ids)
    flat = [int(v) % n for v in idx.reshape(-1)] if n else []
    if any(not -n <= int(v) < n for v in idx.reshape(-1)):
        raise Unsupported("Gather index out of range")
    if idx.ndim == 0:
        p.freeze([ids[flat[0]]], f"Gather {node.name}: reads one channel by index")
        p.hook(node, GatherChannel(node.input[0], tuple(flat), node.input[1]))
        return
    if idx.ndim != 1:
        raise Unsupported("Gather on the channel axis with multi-dimensional indices")
    p.set(node.output[0], [ids[i] for i in flat], t)
    p.hook(node, GatherChannel(node.input[0], tuple(flat), node.input[1]))


@rule("Flatten", any_axis=True)
def flatten(p: Propagation, node: onnx.NodeProto) -> None:
    """Flatten(axis=1): each feature belongs to the channel at its channel-axis index (c*HW+s for NCHW,
    s*C+c for NHWC), so each id repeats once per position of the other flattened axes."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    shape = p.shape(node.input[0])
    axis = int(attrs(node).get("axis", 1))
    if shape is None or axis % max(len(shape), 1) != 1 or t < 1:
        raise Unsupported("Flatten not at axis 1")
    rest = shape[1:]
    if any(not isinstance(d, int) for d in rest):
        raise Unsupported("Flatten of a non-static spatial size")
    if rest[t - 1] != len(ids):
        raise Unsupported("Flatten input does not match its channels")
    chan = np.indices(rest).reshape(len(rest), -1)[t - 1] if rest else np.zeros(1, dtype=np.int64)
    p.set(node.output[0], [ids[int(c)] for c in chan])
