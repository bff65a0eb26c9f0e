"""Channel-dependency groups: which channels of an ONNX graph must be removed together.

Every activation tensor's channel axis is a list of channel ids; the axis is tracked per tensor (axis 1
for NCHW, the last axis after a Transpose to NHWC or for tokens [N, T, C]). Op rules (agmc_onnx/ops)
create, copy, move, cut, concatenate and unite ids (union-find). Each equivalence class of ids is one
channel; classes that share a producing layer form one ChannelGroup with one keep ratio.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from agmc_onnx.model import ModelGraph
from agmc_onnx.ops import RULES, Rewrite, Unsupported
from agmc_onnx.ops.atoms import Layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One parameter tensor (initializer) that holds some of a group's channels along `axis`."""

    tensor: str
    node: str
    axis: int
    positions: tuple[int, ...]
    channels: tuple[int, ...]
    role: str  # "producer" | "consumer" | "norm"


@dataclass
class ChannelGroup:
    """A connected set of channel classes sharing producers; pruned with one keep ratio.

    Worked example: Conv(3->8) -> BatchNormalization -> Relu -> Conv(8->16). The first Conv's output
    starts 8 channel ids; BN and Relu pass them on; the second Conv reads them. That is ONE group of
    size 8, producers [first Conv], with members: the first Conv's weight on axis 0 and its bias on
    axis 0 (role "producer"), BN's scale, bias, mean and variance on axis 0 ("norm"), and the second
    Conv's weight on axis 1 ("consumer"). Keeping channels [0, 2, 5] slices every member at those
    positions; the second Conv's 16 output channels form a group of their own.
    """

    id: int
    size: int
    members: list[Member]
    producers: list[str]
    frozen_reason: str | None = None
    # nodes that compute a statistic over these channels (LayerNorm over the stream): pruning them is not
    # masking them, the pruned network normalises over the kept channels only
    stats: tuple[str, ...] = ()
    # positions a channel spans on its producer's output axis (the head dim for a group of attention heads)
    class_width: int = 1

    @property
    def prunable(self) -> bool:
        """True when channels of this group may be removed."""
        return self.frozen_reason is None and self.size > 1

    @property
    def mask_role(self) -> str:
        """The members a mask zeroes to remove channels: the consumers (the next layers stop reading them), or,
        in a group nothing consumes (single-head q and k features, contracted against each other), the
        producers."""
        return "consumer" if any(m.role == "consumer" for m in self.members) else "producer"


class _UnionFind:
    """Union-find over integer ids with path halving."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        """A new singleton id."""
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        """Root of a."""
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        """Merge the classes of a and b (smaller root wins, so roots follow creation order)."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


@dataclass
class _RawMember:
    tensor: str
    node: str
    axis: int
    role: str
    ids: list[int]


class Propagator:
    """State of the channel-id propagation; the API op rules use."""

    def __init__(self, model: ModelGraph) -> None:
        self.model = model
        self.opset = model.opset
        self.uf = _UnionFind()
        self.origin: list[str | None] = []
        self.frozen: dict[int, str] = {}
        self.tensor_ids: dict[str, list[int]] = {}
        self.tensor_axis: dict[str, int] = {}  # tensor -> position of its channel axis (absent: 1)
        # tensor -> (g, C/g) when its channel axis is split over axes (axis, axis+1), row-major (shuffle)
        self.tensor_split: dict[str, tuple[int, int]] = {}
        # tensor -> its factored layout, when its channels sit on several axes (ops/factors.py)
        self.tensor_layout: dict[str, Layout] = {}
        self.stat_nodes: dict[int, list[str]] = defaultdict(list)  # id -> nodes computing a statistic over it
        self.raw_members: list[_RawMember] = []
        self.created: dict[str, list[int]] = {}  # producer node -> ids it created, in output order
        self.hooks: list[tuple[str, Rewrite]] = []  # (node name, its surgery rewrite)
        self.frozen_log: list[tuple[str, str]] = []
        self.untracked: dict[str, str] = {}  # tensor -> why its channels could not be tracked (width unknown)
        self._current_hooks: list[tuple[str, Rewrite]] = []
        self._current_members: list[_RawMember] = []

    # -- API for rules
    def ids(self, tensor: str) -> list[int] | None:
        """Channel ids of a tensor, None when it has no tracked channel axis."""
        return self.tensor_ids.get(tensor)

    def axis(self, tensor: str) -> int:
        """Position of a tensor's channel axis (1 unless a rule moved it)."""
        return self.tensor_axis.get(tensor, 1)

    def split(self, tensor: str) -> tuple[int, int] | None:
        """(g, C/g) when the tensor's channel axis is split in two (channel shuffle), else None."""
        return self.tensor_split.get(tensor)

    def set(self, tensor: str, ids: list[int], axis: int = 1, split: tuple[int, int] | None = None) -> None:
        """Set the channel ids of an output tensor, carried on its axis `axis` (on `axis` and `axis`+1,
        row-major, when `split` gives the two dims)."""
        self.tensor_ids[tensor] = list(ids)
        self.tensor_axis[tensor] = axis
        self.tensor_layout.pop(tensor, None)
        if split is None:
            self.tensor_split.pop(tensor, None)
        else:
            self.tensor_split[tensor] = split

    def layout(self, tensor: str) -> Layout | None:
        """The factored layout of a tensor whose channels sit on several axes, else None."""
        return self.tensor_layout.get(tensor)

    def set_layout(self, tensor: str, layout: Layout) -> None:
        """Set an output's channels as a (canonical, ops/factors.put) factored layout; its id list is the
        ids in factor order and its channel axis the first axis holding them."""
        self.tensor_ids[tensor] = [int(v) for v in layout.ids.reshape(-1)]
        self.tensor_axis[tensor] = layout.channel_axes()[0]
        self.tensor_split.pop(tensor, None)
        self.tensor_layout[tensor] = layout

    def statistic(self, ids: list[int], node: onnx.NodeProto) -> None:
        """Record that `node` computes a statistic over these channels (kept in ChannelGroup.stats)."""
        for i in ids:
            if node.name not in self.stat_nodes[i]:
                self.stat_nodes[i].append(node.name)

    def new(self, n: int, node: onnx.NodeProto | None, frozen: str | None = None) -> list[int]:
        """n fresh ids created by `node` (None: no producing layer, e.g. graph inputs)."""
        out = []
        for _ in range(n):
            i = self.uf.add()
            self.origin.append(node.name if node is not None else None)
            if frozen is not None:
                self.frozen[i] = frozen
            out.append(i)
        if node is not None:
            self.created.setdefault(node.name, []).extend(out)
        return out

    def unite(self, a: list[int], b: list[int]) -> None:
        """Unite ids position-wise."""
        if len(a) != len(b):
            raise Unsupported("cannot unite channel lists of different lengths")
        for x, y in zip(a, b, strict=True):
            self.uf.union(x, y)

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, if any."""
        return self.model.const(name) if name else None

    def shape(self, name: str) -> list[Any] | None:
        """Inferred dims of a tensor."""
        return self.model.shape(name)

    def has_consumers(self, name: str) -> bool:
        """True when some node reads `name` or it is a graph output."""
        return bool(self.model.consumers.get(name)) or name in self.model.output_names

    def member(self, tensor: str, node: onnx.NodeProto, axis: int, role: str, ids: list[int]) -> None:
        """Record that initializer `tensor` holds channels `ids` along `axis`."""
        arr = self.model.const(tensor)
        if arr is None or arr.shape[axis] != len(ids):
            raise Unsupported(f"parameter {tensor!r} does not match its channels")
        self._current_members.append(_RawMember(tensor, node.name, axis, role, list(ids)))

    def hook(self, node: onnx.NodeProto, rewrite: Rewrite) -> None:
        """Register a surgery rewrite for this node."""
        self._current_hooks.append((node.name, rewrite))

    def opaque(self, tensor: str, reason: str, axis: int = 1) -> None:
        """Give a tensor fresh frozen ids on `axis` (channels of unknown origin), or no ids when its width is unknown."""
        shape = self.shape(tensor)
        if shape is not None and len(shape) >= 2 and axis < len(shape) and isinstance(shape[axis], int):
            self.set(tensor, self.new(shape[axis], None, frozen=reason), axis)
        else:
            self.tensor_ids.pop(tensor, None)
            self.tensor_axis.pop(tensor, None)
            self.tensor_split.pop(tensor, None)
            self.tensor_layout.pop(tensor, None)
            if shape is None or (axis < len(shape) and len(shape) >= 2):  # a width exists but is unknown: record
                self.untracked[tensor] = f"{reason}; the channel width of {tensor!r} is unknown"  # why, for readers

    def freeze(self, ids: list[int], reason: str) -> None:
        """Freeze the classes of `ids`."""
        for i in ids:
            self.frozen.setdefault(i, reason)

    # -- driver
    def run_node(self, node: onnx.NodeProto) -> None:
        """Apply the node's rule; on Unsupported freeze everything it touches."""
        inputs = [i for i in node.input if i]
        tracked = [i for i in inputs if i in self.tensor_ids]
        sub_inputs = _subgraph_inputs(node)
        lost = [i for i in inputs if i in self.untracked] if not tracked and node.op_type not in ("Shape", "Size") else []
        if not tracked and not any(s in self.tensor_ids for s in sub_inputs) and not lost:
            return  # shape computations and constants: no channels flow
        self._current_hooks, self._current_members = [], []
        body = _has_body(node)
        rule = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") and not body else None
        reason = None
        off_axis = [t for t in tracked if self.axis(t) != 1]
        if lost and not any(s in self.tensor_ids for s in sub_inputs):
            reason = f"reads channels that are not tracked ({self.untracked[lost[0]]})"
        elif body:
            reason = f"channels that enter or leave a {node.op_type} body are kept (bodies are not pruned)"
        elif rule is None:
            reason = f"unsupported op {node.op_type}"
        elif off_axis and not rule.any_axis:
            reason = f"channel axis of {off_axis[0]!r} is axis {self.axis(off_axis[0])} ({node.op_type} needs axis 1)"
        elif any(t in self.tensor_split for t in tracked) and not rule.split_aware:
            reason = "reads a channel axis split in two (channel shuffle)"
        elif any(t in self.tensor_layout for t in tracked) and not rule.layout_aware:
            reason = "reads channels spread over several axes (attention heads)"
        else:
            n_before = len(self.created.get(node.name, []))
            try:
                rule.fn(self, node)
            except Unsupported as exc:
                reason = str(exc)
            except Exception as exc:  # a rule bug must never crash the analysis: freeze instead
                log.debug("rule %s failed on %s", node.op_type, node.name, exc_info=True)
                reason = f"rule error ({type(exc).__name__}: {exc})"
            if reason is not None and node.name in self.created:
                # ids created by a failed rule are discarded: mark them frozen
                for i in self.created[node.name][n_before:]:
                    self.frozen.setdefault(i, reason)
        if reason is not None:
            full = f"{node.op_type} {node.name}: {reason}"
            self.frozen_log.append((node.name, full))
            for t in tracked + [s for s in sub_inputs if s in self.tensor_ids]:
                self.freeze(self.tensor_ids[t], full)
            base = self.shape(tracked[0]) if tracked else None
            last = base is not None and tracked[0] not in self.tensor_layout and self.axis(tracked[0]) == len(base) - 1
            for o in node.output:
                if o:  # frozen ids on the axis the input carried them on when the rank is kept; a last channel
                    # axis stays last (tokens [B, N, C]: a frozen attention must not move the stream's axis)
                    out_shape = self.shape(o)
                    same = base is not None and out_shape is not None and len(out_shape) == len(base)
                    if same:
                        self.opaque(o, full, self.axis(tracked[0]))
                    elif last and out_shape is not None and len(out_shape) >= 2:
                        self.opaque(o, full, len(out_shape) - 1)
                    else:
                        self.opaque(o, full, 1)
            return
        self.raw_members.extend(self._current_members)
        self.hooks.extend(self._current_hooks)
        for o in node.output:
            ids = self.tensor_ids.get(o)
            shape = self.shape(o)
            if o in self.tensor_layout:
                continue  # ops/factors.put checked the layout against the shape
            ax = self.axis(o)
            split = self.split(o)
            width = shape[ax] if shape is not None and len(shape) > ax else None
            if split is not None:
                width = shape[ax] * shape[ax + 1] if shape is not None and len(shape) > ax + 1 and all(
                    isinstance(d, int) for d in shape[ax : ax + 2]) else None  # fmt: skip
                if width is None:
                    width = split[0] * split[1]
            if ids is not None and isinstance(width, int):
                if width != len(ids):  # a rule and shape inference disagree: trust neither
                    full = f"{node.op_type} {node.name}: channel count mismatch ({len(ids)} vs {width})"
                    self.frozen_log.append((node.name, full))
                    self.freeze(ids, full)
                    for t in tracked:
                        self.freeze(self.tensor_ids[t], full)


def _has_body(node: onnx.NodeProto) -> bool:
    """True for a node with a subgraph attribute (Loop, If, Scan)."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope names read by a node's subgraphs (If/Loop/Scan bodies)."""
    names: list[str] = []
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            produced = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                produced.update(n.output)
            for n in g.node:
                names.extend(i for i in n.input if i and i not in produced)
                names.extend(_subgraph_inputs(n))
    return names


@dataclass
class ChannelLayout:
    """Where every group's channels sit: per tensor (activations) and per (initializer, axis) (members)."""

    groups: list[ChannelGroup]
    frozen: list[tuple[str, str]]
    tensor_ids: dict[str, list[int]] = field(default_factory=dict)
    tensor_axis: dict[str, int] = field(default_factory=dict)  # tensor -> its channel axis (absent: 1)
    # id -> (group id, channel index) for ids in a group, None for channels outside every group
    id_channel: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    axis_map: dict[tuple[str, int], list[tuple[int, int] | None]] = field(default_factory=dict)
    hooks: list[tuple[str, Rewrite]] = field(default_factory=list)  # (node name, its surgery rewrite)
    _partial: list[tuple[int, frozenset[int]]] | None = field(default=None, repr=False)

    def partial_sets(self) -> list[tuple[int, frozenset[int]]]:
        """(group, channels) of every tensor that holds only part of a group (after Split/Slice): each
        such set must keep at least one channel, or a tensor would become zero-width."""
        if self._partial is None:
            full = {g.id: g.size for g in self.groups}
            found: set[tuple[int, frozenset[int]]] = set()
            for ids in self.tensor_ids.values():
                per: dict[int, set[int]] = defaultdict(set)
                for i in ids:
                    c = self.id_channel.get(i)
                    if c is not None:
                        per[c[0]].add(c[1])
                for gid, chans in per.items():
                    if len(chans) < full[gid]:
                        found.add((gid, frozenset(chans)))
            self._partial = sorted(found, key=lambda t: (t[0], sorted(t[1])))
        return self._partial

    def prunable_groups(self) -> list[ChannelGroup]:
        """Groups whose channels may be removed, in topological order."""
        return [g for g in self.groups if g.prunable]

    def group(self, gid: int) -> ChannelGroup:
        """Group by id."""
        return self.groups[gid]

    def channel_axis(self, tensor: str) -> int:
        """Position of a tracked tensor's channel axis."""
        return self.tensor_axis.get(tensor, 1)

    def tensor_channels(self, tensor: str) -> list[tuple[int, int] | None]:
        """(group id, channel) of every position on a tensor's channel axis."""
        return [self.id_channel.get(i) for i in self.tensor_ids[tensor]]



def find_groups(model: ModelGraph) -> ChannelLayout:
    """Propagate channel ids through the model and collect them into groups and members."""
    p = Propagator(model)
    for name in model.input_names:
        shape = model.shape(name)
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
            p.set(name, p.new(shape[1], None, frozen=f"graph input {name}"))
    for node in model.nodes:
        p.run_node(node)
    for name in model.output_names:
        if name in p.tensor_ids:
            p.freeze(p.tensor_ids[name], f"graph output {name}")
    return _layout(model, p)


def _layout(model: ModelGraph, p: Propagator) -> ChannelLayout:
    """Turn propagated ids into classes, groups and members."""
    uf = p.uf
    n = len(uf.parent)
    root = [uf.find(i) for i in range(n)]
    cls_producers: dict[int, set[str]] = defaultdict(set)
    cls_frozen: dict[int, list[str]] = defaultdict(list)
    for i in range(n):
        if p.origin[i] is not None:
            cls_producers[root[i]].add(p.origin[i])  # type: ignore[arg-type]
        if i in p.frozen:
            cls_frozen[root[i]].append(p.frozen[i])
    # groups: connected components of producers via classes
    prod_parent: dict[str, str] = {}

    def pfind(a: str) -> str:
        while prod_parent.setdefault(a, a) != a:
            prod_parent[a] = prod_parent[prod_parent[a]]
            a = prod_parent[a]
        return a

    for prods in cls_producers.values():
        lst = sorted(prods)
        for other in lst[1:]:
            ra, rb = pfind(lst[0]), pfind(other)
            if ra != rb:
                prod_parent[rb] = ra
    order = {node.name: k for k, node in enumerate(model.nodes)}
    comp_prods: dict[str, list[str]] = defaultdict(list)
    for prod in p.created:
        comp_prods[pfind(prod)].append(prod)
    comps = sorted(comp_prods.values(), key=lambda ps: min(order.get(x, 0) for x in ps))
    class_channel: dict[int, tuple[int, int]] = {}
    groups: list[ChannelGroup] = []
    for gid, prods in enumerate(comps):
        prods.sort(key=lambda x: order.get(x, 0))
        count = 0
        reasons: list[str] = []
        for prod in prods:
            for i in p.created[prod]:
                c = root[i]
                if c not in class_channel:
                    class_channel[c] = (gid, count)
                    count += 1
                    for r in cls_frozen.get(c, []):
                        if r not in reasons:
                            reasons.append(r)
        frozen = "; ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "") if reasons else None
        groups.append(ChannelGroup(id=gid, size=count, members=[], producers=prods, frozen_reason=frozen))
    stats: dict[int, list[str]] = defaultdict(list)
    for i, nodes in p.stat_nodes.items():
        c = class_channel.get(root[i])
        if c is not None:
            stats[c[0]].extend(n for n in nodes if n not in stats[c[0]])
    for gid, nodes in stats.items():
        groups[gid].stats = tuple(sorted(nodes, key=lambda x: order.get(x, 0)))
    id_channel = {i: class_channel.get(root[i]) for i in range(n)}
    axis_map: dict[tuple[str, int], list[tuple[int, int] | None]] = {}
    for rm in p.raw_members:
        chans = [id_channel[i] for i in rm.ids]
        key = (rm.tensor, rm.axis)
        if key in axis_map:
            prev = axis_map[key]
            axis_map[key] = [a if a is not None else b for a, b in zip(prev, chans, strict=True)]
        else:
            axis_map[key] = chans
        per_group: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for pos, ch in enumerate(chans):
            if ch is not None:
                per_group[ch[0]][0].append(pos)
                per_group[ch[0]][1].append(ch[1])
        for gid, (pos, chs) in per_group.items():
            groups[gid].members.append(Member(rm.tensor, rm.node, rm.axis, tuple(pos), tuple(chs), rm.role))

    for ids in p.created.values():  # ids a producer creates per class (a head's q, k, v rows: 3d)
        classes = {class_channel[root[i]] for i in ids if root[i] in class_channel}
        if classes:
            g = groups[next(iter(classes))[0]]
            width = max(1, len(ids) // len(classes))
            g.class_width = width if g.class_width == 1 else min(g.class_width, width)
    frozen_list = list(p.frozen_log)
    for g in groups:
        if g.frozen_reason and not any(g.frozen_reason.startswith(r) for _, r in frozen_list):
            frozen_list.append((", ".join(g.producers[:2]), g.frozen_reason))
    return ChannelLayout(
        groups=groups,
        frozen=frozen_list,
        tensor_ids=dict(p.tensor_ids),
        tensor_axis={t: a for t, a in p.tensor_axis.items() if t in p.tensor_ids},
        id_channel=id_channel,
        axis_map=axis_map,
        hooks=list(p.hooks),
    )
