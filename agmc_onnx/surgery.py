"""Graph surgery: write the pruned model (prune) or zero the removed channels in place (mask).

prune edits through onnx-graphsurgeon: it slices the channel-holding constants, lets each op rule's
rewrite edit its node (attributes, constant inputs, op type), cleans up and sorts, and exports with the
source's header and interface; what gs does not carry (some attribute types, empty lists, node docs) is
set aside and put back. mask stays on the raw proto: it only overwrites the values of initializers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.logger import G_LOGGER

from agmc_onnx.analysis import Analysis
from agmc_onnx.errors import AgmcError
from agmc_onnx.plan import Plan, validate
from agmc_onnx.protos import dims

# GraphProto fields the exported graph rewrites; every other field (name, interface, docs) is the source's
_REWRITTEN = frozenset({"node", "initializer", "sparse_initializer", "value_info"})


def keep_mask(analysis: Analysis, channels: list[tuple[int, int] | None], plan: Plan) -> np.ndarray:
    """Boolean mask of kept positions for a list of (group, channel) entries under `plan` (frozen and
    unlisted groups keep everything)."""
    sets = {gid: set(k) for gid, k in plan.kept.items() if analysis.groups[gid].prunable}
    return np.array([c is None or c[0] not in sets or c[1] in sets[c[0]] for c in channels], dtype=bool)


class SurgeryContext:
    """What rewrites see (the ops.Surgery protocol): the plan's keep masks per tensor and the constants of
    the graph being rewritten."""

    def __init__(self, analysis: Analysis, plan: Plan, graph: gs.Graph) -> None:
        """Index the tensors of `graph` (imported from the analysed model)."""
        self.analysis = analysis
        self.plan = plan
        self.opset = analysis.model.opset
        self.tensors: dict[str, gs.Tensor] = graph.tensors()

    def keep_mask(self, tensor: str) -> np.ndarray:
        """Kept positions of an activation's channel axis."""
        return keep_mask(self.analysis, self.analysis.tensor_channels(tensor), self.plan)

    def new_len(self, tensor: str) -> int:
        """Channel count of an activation after pruning."""
        return int(self.keep_mask(tensor).sum())

    def _constant(self, name: str) -> gs.Constant:
        """The constant called `name` (a rewrite that names anything else is a rule bug)."""
        t = self.tensors.get(name)
        if not isinstance(t, gs.Constant):
            raise AgmcError(f"surgery rewrite reads {name!r}, which is not a constant")
        return t

    def const(self, name: str) -> np.ndarray:
        """Current value of a constant."""
        return self._constant(name).values

    def set_const(self, name: str, value: np.ndarray) -> None:
        """Replace a constant's value (same name: every reader sees the new value)."""
        self._constant(name).values = value

    def fresh_const(self, base: str, value: np.ndarray) -> gs.Constant:
        """A new constant named after `base` (made unique), for a rewrite to wire into its node."""
        name, k = base, 0
        while name in self.tensors:
            k += 1
            name = f"{base}_{k}"
        c = gs.Constant(name, value)
        self.tensors[name] = c
        return c


def axis_masks(analysis: Analysis, plan: Plan) -> dict[tuple[str, int], np.ndarray]:
    """Keep mask of every (initializer, axis) that holds channels of a pruned group.

    One keep_mask call over every entry at once: per key, it would rebuild the plan's kept sets each time
    (measured: most of prune's time on ResNet-50; the evaluator's slice mode calls this per candidate).
    """
    keys = list(analysis.axis_map)
    flat = keep_mask(analysis, [c for key in keys for c in analysis.axis_map[key]], plan)
    out, off = {}, 0
    for key in keys:
        mask = flat[off : off + len(analysis.axis_map[key])]
        off += len(mask)
        if not mask.all():
            out[key] = mask
    return out


def _node_pairs(graph: gs.Graph, proto: onnx.GraphProto) -> Iterator[tuple[gs.Node, onnx.NodeProto]]:
    """Each gs node with its NodeProto, subgraphs included (gs keeps node order on import and on export)."""
    for node, pnode in zip(graph.nodes, proto.node, strict=True):
        yield node, pnode
        for attr in pnode.attribute:
            sub = node.attrs.get(attr.name)
            if isinstance(sub, gs.Graph):
                yield from _node_pairs(sub, attr.g)


@dataclass
class _Aside:
    """What gs does not carry through for one node: attributes its importer drops (types it does not
    support) or its exporter cannot re-type (empty lists, which raise), the doc string, the metadata."""

    op: str
    attrs: list[onnx.AttributeProto]
    doc_string: str
    metadata: list[onnx.StringStringEntryProto]


_DROPPED = object()


def _not_carried(value: object) -> bool:
    """True for an attribute value gs dropped on import or holds as an empty list (it cannot export that)."""
    return value is _DROPPED or (isinstance(value, list) and not value)


def _set_aside(graph: gs.Graph, src: onnx.GraphProto) -> dict[int, _Aside]:
    """Take what gs does not carry off the freshly imported nodes, keyed by node identity."""
    out: dict[int, _Aside] = {}
    for node, pnode in _node_pairs(graph, src):
        held = [a for a in pnode.attribute if _not_carried(node.attrs.get(a.name, _DROPPED))]
        if held or pnode.doc_string or pnode.metadata_props:
            for a in held:
                node.attrs.pop(a.name, None)
            out[id(node)] = _Aside(pnode.op_type, held, pnode.doc_string, list(pnode.metadata_props))
    return out


def _put_back(graph: gs.Graph, proto: onnx.GraphProto, aside: dict[int, _Aside]) -> None:
    """Return what _set_aside took to the exported nodes; an attribute a rewrite set, or a node whose op a
    rewrite changed, keeps the rewrite's version."""
    if not aside:
        return
    for node, pnode in _node_pairs(graph, proto):
        held = aside.get(id(node))
        if held is None or pnode.op_type != held.op:
            continue
        present = {a.name for a in pnode.attribute}
        pnode.attribute.extend(a for a in held.attrs if a.name not in present)
        pnode.doc_string = held.doc_string
        pnode.metadata_props.extend(held.metadata)


def _bodies(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every Loop/If/Scan body nested in `graph` (recursively)."""
    out = []
    for node in graph.node:
        for a in node.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                out += [g, *_bodies(g)]
    return out


def _outer_constants_back(graph: onnx.GraphProto, main: set[str]) -> None:
    """gs exports an outer-scope constant that only bodies read into every body that reads it (a copy per If
    branch); put each back, once, into the main graph where the source had it (in place)."""
    have = {t.name for t in graph.initializer}
    for body in _bodies(graph):
        keep = []
        for t in body.initializer:
            if t.name in main and t.name not in {i.name for i in body.input}:
                if t.name not in have:
                    graph.initializer.append(t)
                    have.add(t.name)
                continue
            keep.append(t)
        if len(keep) != len(body.initializer):
            del body.initializer[:]
            body.initializer.extend(keep)


def _export(graph: gs.Graph, src: onnx.ModelProto) -> onnx.ModelProto:
    """The rewritten graph as a model with the source's header (IR, opsets, producer, metadata, functions),
    graph name and interface (declared input/output types), and initializers in the source's order."""
    interface = {id(t) for t in graph.inputs + graph.outputs}
    for t in graph.tensors().values():  # stale channel counts: shapes are re-inferred, so export none
        if isinstance(t, gs.Variable) and id(t) not in interface:
            t.shape = t.dtype = None
    out = gs.export_onnx(graph, do_type_check=False)
    for fd in out.DESCRIPTOR.fields:
        if fd.name != "graph":
            out.ClearField(fd.name)
    out.MergeFrom(onnx.ModelProto(**{fd.name: v for fd, v in src.ListFields() if fd.name != "graph"}))
    for fd in out.graph.DESCRIPTOR.fields:
        if fd.name not in _REWRITTEN:
            out.graph.ClearField(fd.name)
    out.graph.MergeFrom(onnx.GraphProto(**{fd.name: v for fd, v in src.graph.ListFields() if fd.name not in _REWRITTEN}))
    _outer_constants_back(out.graph, {t.name for t in src.graph.initializer})
    order = {t.name: k for k, t in enumerate(src.graph.initializer)}
    inits = sorted(out.graph.initializer, key=lambda t: (order.get(t.name, len(order)), t.name))
    if [t.name for t in inits] != [t.name for t in out.graph.initializer]:
        del out.graph.initializer[:]
        out.graph.initializer.extend(inits)
    return out


def _declared(declared: onnx.ValueInfoProto, inferred: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """The declared output (its symbolic dims and names), unless its shape contradicts what the graph computes
    (a stale converter value_info: another rank, or another fixed size); then the inferred shape."""
    want, got = dims(declared.type), dims(inferred.type)
    if want is None or got is None:
        return declared
    clash = len(want) != len(got) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                         for a, b in zip(want, got, strict=True))  # fmt: skip
    if not clash:
        return declared
    fixed = onnx.ValueInfoProto()
    fixed.CopyFrom(declared)
    fixed.type.tensor_type.shape.CopyFrom(inferred.type.tensor_type.shape)
    return fixed


def prune(analysis: Analysis, plan: Plan, check: bool = True) -> onnx.ModelProto:
    """The analysed model with the plan's removed channels cut out; shapes re-inferred and checked."""
    validate(analysis, plan)
    src = analysis.model.proto
    with G_LOGGER.suppress(G_LOGGER.ERROR):  # its warnings name attributes that _set_aside carries over
        graph = gs.import_onnx(src)
    aside = _set_aside(graph, src.graph)
    ctx = SurgeryContext(analysis, plan, graph)
    for (name, axis), mask in axis_masks(analysis, plan).items():
        ctx.set_const(name, np.compress(mask, ctx.const(name), axis=axis))
    nodes = {n.name: n for n in graph.nodes}
    for node_name, rewrite in analysis.hooks:
        try:
            rewrite.apply(ctx, nodes[node_name])
        except ValueError as exc:  # a plan the rewrite cannot write (heads cut through): say where
            raise AgmcError(f"cannot rewrite {node_name!r} for this plan: {exc}") from exc
    # cleanup drops constants a rewrite replaced (old indices, a strided Slice's bounds); toposort leaves a
    # graph model.load normalised as it is (onnxslim sorted it in the same level order), so the nodes keep
    # the analysed order, which BN re-calibration pairs converted BN layers by
    graph.cleanup().toposort()
    with G_LOGGER.suppress(G_LOGGER.ERROR):
        proto = _export(graph, src)
    _put_back(graph, proto.graph, aside)
    for o in proto.graph.output:  # inferred afresh: a stale declared shape must not fail inference
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise AgmcError(f"pruned graph fails shape inference: {exc}") from exc
    outputs = [_declared(o, got) for o, got in zip(src.graph.output, inferred.graph.output, strict=True)]
    del inferred.graph.output[:]
    inferred.graph.output.extend(outputs)
    if check:
        try:
            onnx.checker.check_model(inferred, full_check=True)
        except Exception as exc:
            raise AgmcError(f"pruned graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return inferred


def mask(analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """The analysed model with every consumer member's removed positions zeroed (a group without consumers:
    its producers'; same shapes), and every
    statistic over pruned channels (a LayerNorm over the stream, ChannelGroup.stats) computed over the kept
    channels only: the full-width network that computes what the pruned one computes.

    Raw proto, not graphsurgeon: without statistics no node, input or graph structure changes, only the
    values of existing initializers, so a copy with those initializers overwritten is the whole job.
    """
    validate(analysis, plan)
    proto = copy.deepcopy(analysis.model.proto)
    inits = {t.name: t for t in proto.graph.initializer}
    zeroed: dict[str, np.ndarray] = {}
    kept = {gid: set(v) for gid, v in plan.kept.items() if analysis.groups[gid].prunable}
    for gid, keep in kept.items():
        for m in analysis.groups[gid].members:
            if m.role != analysis.groups[gid].mask_role:
                continue
            drop = [p for p, c in zip(m.positions, m.channels, strict=True) if c not in keep]
            if not drop:
                continue
            arr = zeroed.get(m.tensor)
            if arr is None:
                arr = zeroed[m.tensor] = numpy_helper.to_array(inits[m.tensor]).copy()
            idx: list[Any] = [slice(None)] * arr.ndim
            idx[m.axis] = drop
            arr[tuple(idx)] = 0
    for name, arr in zeroed.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    _kept_statistics(analysis, plan, proto)
    return proto


def _kept_statistics(analysis: Analysis, plan: Plan, proto: onnx.ModelProto) -> None:
    """Rewrite each statistic node whose input loses channels into its kept-channels form (ops.norms)."""
    from agmc_onnx.ops.norms import masked_statistic

    names = {n for gid in plan.kept if analysis.groups[gid].prunable for n in analysis.groups[gid].stats}
    if not names:
        return
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    for node in nodes:
        x = node.input[0] if node.input else ""
        keep = keep_mask(analysis, analysis.tensor_channels(x), plan) if node.name in names else None
        if keep is None or keep.all():
            proto.graph.node.append(node)
            continue
        shape = analysis.model.shape(x) or []
        dtype = onnx.helper.tensor_dtype_to_np_dtype(analysis.model.elem_types.get(x, onnx.TensorProto.FLOAT))
        new, consts = masked_statistic(node, keep, analysis.channel_axis(x), len(shape), dtype, analysis.model.opset)
        proto.graph.node.extend(new)
        proto.graph.initializer.extend(consts)
