"""Cost model: MACs and params per node as a function of per-group keep counts, without surgery.

Convention (batch 1, symbolic dims count as 1): Conv = out_spatial * C_out * C_in/group * kH*kW;
ConvTranspose = in_spatial * C_in * C_out/group * kH*kW; Gemm/MatMul = M*K*N (attention's q k^T and
attention x v too, per head); Einsum = the product of every index's size; element-wise ops, pools and
norms are not MACs. Params = elements of every float initializer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx

from agmc_onnx.groups import ChannelLayout
from agmc_onnx.inputs import InputShapes, as_input_shapes
from agmc_onnx.model import ModelGraph
from agmc_onnx.protos import FLOAT_TYPES
from agmc_onnx.shapes import at_batch, static_shapes


class KeptChannels(Protocol):
    """What the cost model reads of a plan (agmc_onnx.plan.Plan): kept channel indices per group id."""

    kept: dict[int, list[int]]


MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


def _static(d: Any) -> int:
    """A dim as a number: symbolic or unknown dims (the batch) count as 1."""
    return int(d) if isinstance(d, (int, np.integer)) and d >= 0 else 1


def _prod(dims: Any) -> int:
    """Product of dims with symbolic ones as 1."""
    out = 1
    for d in dims:
        out *= _static(d)
    return out


def node_macs_static(node: onnx.NodeProto, inits: Mapping[str, np.ndarray], shapes: Mapping[str, Any]) -> int:
    """MACs of one node from its tensors' own shapes (no groups involved)."""
    op = node.op_type
    if op not in MAC_OPS:
        return 0
    if op == "Einsum":
        return einsum_macs(node, shapes)
    a_shape = shapes.get(node.input[0])
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    w_shape = list(w.shape) if w is not None else shapes.get(node.input[1])
    out_shape = shapes.get(node.output[0])
    if w_shape is None:
        return 0
    if op == "Conv":
        return _prod(out_shape[2:]) * _prod(w_shape) if out_shape is not None else 0
    if op == "ConvTranspose":
        return _prod(a_shape[2:]) * _prod(w_shape) if a_shape is not None else 0
    if op == "Gemm":
        if a_shape is None:
            return 0
        trans_a = any(x.name == "transA" and x.i for x in node.attribute)
        m = a_shape[1] if trans_a else a_shape[0]
        return _static(m) * _prod(w_shape)
    # MatMul: prod(out) * K
    if out_shape is None or a_shape is None:
        return 0
    return _prod(out_shape) * _static(a_shape[-1])


def einsum_macs(node: onnx.NodeProto, shapes: Mapping[str, Any]) -> int:
    """MACs of an Einsum: the product of the sizes of every index it names (each once), symbolic dims as 1."""
    eq = next((a.s for a in node.attribute if a.name == "equation"), b"").decode().replace(" ", "")
    sizes: dict[str, int] = {}
    for term, name in zip(eq.split("->")[0].split(","), node.input, strict=False):
        dims = shapes.get(name)
        if dims is None:
            return 0
        if "..." in term:  # ellipsis dims named by their distance from the ellipsis' end (they broadcast)
            head, tail = term.split("...")
            n = len(dims) - len(head) - len(tail)
            letters = list(head) + [f"...{n - k}" for k in range(n)] + list(tail)
        else:
            letters = list(term)
        for letter, d in zip(letters, dims, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), _static(d))
    return _prod(sizes.values())



def count_macs(proto: onnx.ModelProto, input_shapes: InputShapes | Mapping[str, Sequence[int]] | None = None) -> int:
    """MACs of a model counted from its own shapes at `input_shapes` (default: the file's static dims or its
    exporter's metadata), batch 1, shape subgraphs folded: the independent oracle. Nodes inside Loop/If
    bodies are not counted (design.md)."""
    sizes = as_input_shapes(proto, input_shapes)
    shapes = static_shapes(proto, at_batch(sizes.dims, 1))  # weights' dims included (Constant nodes too)
    return int(sum(node_macs_static(n, {}, shapes) for n in proto.graph.node))


def _elems(t: onnx.TensorProto) -> int:
    """Elements of a float tensor, 0 for other types."""
    if t.data_type not in FLOAT_TYPES:
        return 0
    return int(np.prod(t.dims)) if len(t.dims) else 1


def _constant_params(node: onnx.NodeProto) -> int:
    """Float elements a Constant node holds."""
    total = 0
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            total += _elems(a.t)
        elif a.name == "value_float":
            total += 1
        elif a.name == "value_floats":
            total += len(a.floats)
    return total


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every Loop/If/Scan body nested in `graph`'s nodes (recursively)."""
    out = []
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                out.append(g)
                out.extend(_subgraphs(g))
    return out


def _graph_params(graph: onnx.GraphProto) -> int:
    """Float elements of one graph's own initializers and Constant nodes (not its subgraphs')."""
    return sum(_elems(t) for t in graph.initializer) + sum(
        _constant_params(n) for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx"))


def nested_params(graph: onnx.GraphProto) -> int:
    """Float parameters that live inside Loop/If bodies (their initializers and Constant nodes)."""
    return sum(_graph_params(g) for g in _subgraphs(graph))


def count_params(proto: onnx.ModelProto) -> int:
    """Float parameters of a model: elements of its float initializers and float Constant nodes, those of
    Loop/If bodies included (exporters keep weights in either; Paddle2ONNX writes every weight as a Constant)."""
    return _graph_params(proto.graph) + nested_params(proto.graph)


@dataclass
class Length:
    """The kept length of one axis: a constant plus, per prunable group, the channels it holds."""

    const: int
    terms: list[tuple[int, float, np.ndarray]] = field(default_factory=list)  # (group, count/size, channels)

    def full(self) -> int:
        """Length with everything kept."""
        return self.const + sum(len(ch) for _, _, ch in self.terms)

    def of_counts(self, keep: Mapping[int, int]) -> float:
        """Length for keep counts (exact when every channel of a group appears equally often)."""
        v = float(self.const)
        for gid, coef, ch in self.terms:
            k = keep.get(gid)
            v += len(ch) if k is None else coef * k
        return v

    def of_masks(self, masks: Mapping[int, np.ndarray]) -> int:
        """Exact length for per-group boolean keep masks."""
        v = self.const
        for gid, _, ch in self.terms:
            m = masks.get(gid)
            v += len(ch) if m is None else int(m[ch].sum())
        return v


@dataclass
class _Term:
    node: str
    coef: int
    lengths: list[Length]


class CostModel:
    """MACs/params of a model as a function of per-group keep counts (cheap: a few ops per node)."""

    def __init__(self, terms: list[_Term], params: list[tuple[str, list[Length]]], sizes: dict[int, int]) -> None:
        """Build from per-node MAC terms and per-initializer axis lengths."""
        self.terms = terms
        self.param_terms = params
        self.sizes = sizes
        self.counts_exact = all(
            _uniform(ch, sizes[g]) for t in terms for length in t.lengths for g, _, ch in length.terms
        ) and all(_uniform(ch, sizes[g]) for _, lengths in params for length in lengths for g, _, ch in length.terms)
        self.total_macs = self.macs({})
        self.total_params = self.params({})

    def node_macs(self, keep: Mapping[int, int] | None = None) -> dict[str, int]:
        """MACs per node for keep counts (missing groups: full size)."""
        keep = keep or {}
        out = {}
        for t in self.terms:
            v = float(t.coef)
            for length in t.lengths:
                v *= length.of_counts(keep)
            out[t.node] = int(round(v))
        return out

    def macs(self, keep: Mapping[int, int]) -> int:
        """Total MACs for keep counts per group id."""
        total = 0.0
        for t in self.terms:
            v = float(t.coef)
            for length in t.lengths:
                v *= length.of_counts(keep)
            total += v
        return int(round(total))

    def params(self, keep: Mapping[int, int]) -> int:
        """Total float params for keep counts per group id."""
        total = 0.0
        for _, lengths in self.param_terms:
            v = 1.0
            for length in lengths:
                v *= length.of_counts(keep)
            total += v
        return int(round(total))

    def _masks(self, plan: KeptChannels) -> dict[int, np.ndarray]:
        """Per-group keep masks of a plan."""
        masks = {}
        for gid, kept in plan.kept.items():
            if gid in self.sizes:
                m = np.zeros(self.sizes[gid], dtype=bool)
                m[list(kept)] = True
                masks[gid] = m
        return masks

    def plan_macs(self, plan: KeptChannels) -> int:
        """Exact total MACs of the model a plan prunes to (accounts for which channels are kept)."""
        masks = self._masks(plan)
        total = 0
        for t in self.terms:
            v = t.coef
            for length in t.lengths:
                v *= length.of_masks(masks)
            total += v
        return int(total)

    def plan_params(self, plan: KeptChannels) -> int:
        """Exact float params of the model a plan prunes to."""
        masks = self._masks(plan)
        total = 0
        for _, lengths in self.param_terms:
            v = 1
            for length in lengths:
                v *= length.of_masks(masks)
            total += v
        return int(total)


def _uniform(ch: np.ndarray, size: int) -> bool:
    """True when every channel of a group appears equally often in `ch` (counts then give exact lengths)."""
    counts = np.bincount(ch, minlength=size)
    return bool((counts == counts[0]).all())


def _length(channels: list[tuple[int, int] | None], prunable: Mapping[int, int]) -> Length:
    """A Length from the (group, channel) of each position."""
    const = 0
    per: dict[int, list[int]] = {}
    for c in channels:
        if c is None or c[0] not in prunable:
            const += 1
        else:
            per.setdefault(c[0], []).append(c[1])
    return Length(const, [(g, len(ch) / prunable[g], np.array(ch, dtype=np.int64)) for g, ch in per.items()])


class _StaticShapes:
    """Mapping-like view of ModelGraph.static_shape (what node_macs_static takes)."""

    def __init__(self, model: ModelGraph) -> None:
        self.model = model

    def get(self, name: str, default: Any = None) -> Any:
        """Static dims of a tensor."""
        got = self.model.static_shape(name)
        return default if got is None else got


def build_cost_model(m: ModelGraph, analysis: ChannelLayout) -> CostModel:
    """Precompute per node and per initializer axis the group terms of their lengths."""
    prunable = {g.id: g.size for g in analysis.groups if g.prunable}

    def init_len(name: str, axis: int) -> Length:
        chans = analysis.axis_map.get((name, axis))
        if chans is None:
            return Length(int(m.inits[name].shape[axis]))
        return _length(chans, prunable)

    def tensor_len(name: str, static: Any) -> Length:
        if name in analysis.tensor_ids:
            return _length(analysis.tensor_channels(name), prunable)
        return Length(_static(static))

    static = _StaticShapes(m)
    terms: list[_Term] = []
    for node in m.nodes:
        op = node.op_type
        if op not in MAC_OPS:
            continue
        w_name = node.input[1] if len(node.input) > 1 else ""
        w = m.inits.get(w_name)
        a_shape = m.static_shape(node.input[0])
        out_shape = m.static_shape(node.output[0])
        if op in ("Conv", "ConvTranspose"):
            if w is None:
                terms.append(_Term(node.name, node_macs_static(node, m.inits, static), []))
                continue
            spatial = (out_shape if op == "Conv" else a_shape) or []
            coef = _prod(spatial[2:]) * _prod(w.shape[2:])
            terms.append(_Term(node.name, coef, [init_len(w_name, 0), init_len(w_name, 1)]))
        elif op == "Gemm" and w is not None and a_shape is not None:
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            rows = a_shape[1] if trans_a else a_shape[0]
            terms.append(_Term(node.name, _static(rows), [init_len(w_name, 0), init_len(w_name, 1)]))
        elif op == "MatMul" and w is not None and w.ndim == 2 and out_shape is not None and a_shape is not None:
            r = len(out_shape)
            t = analysis.channel_axis(node.output[0]) if node.output[0] in analysis.tensor_ids else r - 1
            if t == r - 1:  # rows x K x N: channels (if any) are the weight's axes
                terms.append(_Term(node.name, _prod(out_shape[:-1]), [init_len(w_name, 0), init_len(w_name, 1)]))
            else:  # channels on a row axis of A pass through
                coef = _prod([d for k, d in enumerate(out_shape[:-1]) if k != t])
                terms.append(_Term(node.name, coef, [tensor_len(node.output[0], out_shape[t]),
                                                     init_len(w_name, 0), init_len(w_name, 1)]))
        else:  # products of two activations (attention) and layers with run-time weights
            macs = node_macs_static(node, m.inits, static)
            out, a = node.output[0], node.input[0]
            if out in analysis.tensor_ids and macs:  # channels (heads) of the output
                width = len(analysis.tensor_ids[out])
                terms.append(_Term(node.name, macs // width, [tensor_len(out, width)]))
            elif (op == "MatMul" and macs and a in analysis.tensor_ids and a_shape is not None
                  and analysis.channel_axis(a) == len(a_shape) - 1):  # contracted channels (single-head q k^T)
                width = len(analysis.tensor_ids[a])
                terms.append(_Term(node.name, macs // width, [tensor_len(a, width)]))
            else:
                terms.append(_Term(node.name, macs, []))
    params: list[tuple[str, list[Length]]] = []
    nested = nested_params(m.graph)
    if nested:  # weights inside Loop/If bodies: counted, never pruned
        params.append(("(Loop/If bodies)", [Length(nested)]))
    for t in m.graph.initializer:
        arr = m.inits[t.name]
        if arr.dtype.kind != "f":
            continue
        if arr.ndim == 0:
            params.append((t.name, [Length(1)]))
            continue
        params.append((t.name, [init_len(t.name, ax) for ax in range(arr.ndim)]))
    return CostModel(terms, params, {g.id: g.size for g in analysis.groups})
