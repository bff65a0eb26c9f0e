"""Load an ONNX file into a ModelGraph: checked, normalised (onnxslim, BN kept), shapes inferred."""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from agmc_onnx.errors import InputError
from agmc_onnx.inputs import InputShapes, as_input_shapes, resolve_input_shapes
from agmc_onnx.modelfile import MAX_OPSET, MIN_OPSET, read_model_file
from agmc_onnx.protos import Dim, constants_to_initializers, dims
from agmc_onnx.protos import opset as default_opset
from agmc_onnx.shapefold import fold_shape_targets
from agmc_onnx.shapes import at_batch, shape_views, shapes_of, static_shapes
from agmc_onnx.shapes import infer as infer_shapes

log = logging.getLogger(__name__)
logging.getLogger("agmc_onnx").addHandler(logging.NullHandler())  # no stray stderr lines from warnings

# onnxslim passes we skip: fusion folds BN into Conv (we keep BN for re-calibration) and rewrites
# Gemm/Conv patterns; weight tying makes two layers share one initializer (surgery slices per layer).
_SLIM_SKIP = ["graph_fusion", "weight_tying"]


def _read(path: Path) -> onnx.ModelProto:
    """Read and check a model file (agmc_onnx.modelfile: the one reader); every failure is an InputError naming it."""
    return read_model_file(path)


def _bypass_identity_on_initializers(graph: onnx.GraphProto) -> None:
    """Identity(initializer) -> the node reads a copy of the initializer (the PyTorch exporter shares weights so)."""
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            graph.initializer.append(t)
            inits[t.name] = t
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def _unshare_initializers(graph: onnx.GraphProto) -> None:
    """Give every (node, input) its own copy of a shared float initializer, so surgery can slice per layer."""
    inits = {t.name: t for t in graph.initializer}
    seen: set[str] = set()
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in inits or name in graph_outputs:
                continue
            if name in seen:
                t = onnx.TensorProto()
                t.CopyFrom(inits[name])
                base = f"{name}__{node.name or node.op_type}_{i}"
                new = base
                k = 0
                while new in inits:
                    k += 1
                    new = f"{base}_{k}"
                t.name = new
                graph.initializer.append(t)
                inits[new] = t
                node.input[i] = new
            else:
                seen.add(name)


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique, non-empty name (reasons and reports refer to nodes by name)."""
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in used:
            name = f"{name}_{i}"
        node.name = name
        used.add(name)


def topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in topological order (exporters usually write them so; hand-written files may not)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(n in available for n in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # outer-scope names of subgraphs or a cycle: keep file order
            ordered.extend(rest)
            break
        pending = rest
    return ordered


def _toposort(graph: onnx.GraphProto) -> None:
    """Sort the graph's nodes topologically, in place."""
    ordered = topological_order(graph)
    del graph.node[:]
    graph.node.extend(ordered)


def _slim(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim with fusion and weight tying off; the original when it fails or changes the interface."""
    try:
        import onnxslim

        slimmed = onnxslim.slim(copy.deepcopy(proto), skip_optimizations=list(_SLIM_SKIP))
    except Exception as exc:  # onnxslim is best effort; the engine copes with unfolded graphs too
        log.warning("onnxslim failed (%s); analysing the graph as written", exc)
        return proto
    if slimmed is None:
        return proto
    before = [(o.name, dims(o.type)) for o in proto.graph.output]
    after = [(o.name, dims(o.type)) for o in slimmed.graph.output]
    ins_b = [(i.name, dims(i.type)) for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    ins_a = [(i.name, dims(i.type)) for i in slimmed.graph.input]
    if [n for n, _ in before] != [n for n, _ in after] or ins_b != ins_a:
        log.warning("onnxslim changed graph inputs/outputs; analysing the graph as written")
        return proto
    bn_b = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    bn_a = sum(n.op_type == "BatchNormalization" for n in slimmed.graph.node)
    if bn_a != bn_b:
        log.warning("onnxslim removed BatchNormalization nodes; analysing the graph as written")
        return proto
    return slimmed


def _restore_header(dst: onnx.ModelProto, src: onnx.ModelProto) -> None:
    """Keep the original's IR version, opsets, producer and metadata after normalising."""
    dst.ir_version = src.ir_version
    del dst.opset_import[:]
    dst.opset_import.extend(src.opset_import)
    dst.producer_name = src.producer_name
    dst.producer_version = src.producer_version
    dst.domain = src.domain
    dst.model_version = src.model_version
    dst.doc_string = src.doc_string
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    # graph outputs keep the original declared types (onnxslim may add or drop shape details)
    outs = {o.name: o for o in src.graph.output}
    for o in dst.graph.output:
        if o.name in outs:
            o.CopyFrom(outs[o.name])


def normalise(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold exporter clutter (onnxslim) and run-time shapes whose only unknown is the batch (shapefold), weights
    into initializers, unshared; named, sorted, shapes inferred."""
    original = proto
    proto = copy.deepcopy(proto)
    # drop initializers listed as graph inputs (old IR): they are weights, not inputs
    init_names = {t.name for t in proto.graph.initializer}
    ins = [i for i in proto.graph.input if i.name not in init_names]
    del proto.graph.input[:]
    proto.graph.input.extend(ins)
    constants_to_initializers(proto.graph)
    proto = _slim(proto)
    constants_to_initializers(proto.graph)
    proto = fold_shape_targets(proto)  # run-time Reshape/Expand shapes whose only unknown is the batch
    _bypass_identity_on_initializers(proto.graph)
    _unshare_initializers(proto.graph)
    _name_nodes(proto.graph)
    _toposort(proto.graph)
    _restore_header(proto, original)
    if proto.ir_version < 4:
        proto.ir_version = 4
    del proto.graph.value_info[:]
    return infer_shapes(proto)


@dataclass
class ModelGraph:
    """A loaded, normalised model: the proto plus fast maps from names to nodes, constants and shapes."""

    proto: onnx.ModelProto
    path: str | None = None
    source: onnx.ModelProto | None = None  # the file as read (before normalising)
    # the size the run analyses at (None: resolved from the file: its static dims or its exporter's metadata)
    input_shapes: InputShapes | None = None
    filled_shapes: list[str] = field(default_factory=list)  # tensors whose shape came from folding / a run
    notes: list[str] = field(default_factory=list)  # what loading found that a user should know
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, list[Dim] | None] = field(default_factory=dict)
    elem_types: dict[str, int] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        """Index the graph at its analysis size."""
        if self.input_shapes is None:
            self.input_shapes = resolve_input_shapes(self.source or self.proto, None, self.path)
        self._static: dict[str, list[Dim] | None] | None = None
        self.reindex()

    def static_shape(self, name: str) -> list[Dim] | None:
        """Dims at the analysis size and batch 1 (dims that follow from the batch become numbers); for costs."""
        if self._static is None:
            assert self.input_shapes is not None
            self._static = static_shapes(self.proto, at_batch(self.input_shapes.dims, 1))
            for name_, arr in self.inits.items():
                self._static[name_] = list(arr.shape)
        got = self._static.get(name)
        return got if got is not None else self.shape(name)

    def reindex(self) -> None:
        """Rebuild the name maps from `proto`; shapes are those at the analysis size (input_shapes)."""
        g = self.proto.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.elem_types = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if vi.type.HasField("tensor_type"):
                self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        assert self.input_shapes is not None
        views = shape_views(self.proto, self.input_shapes.dims, shapes_of(self.proto))
        self.shapes = views.view
        self.filled_shapes = views.filled
        self.notes = [self.input_shapes.note] if self.input_shapes.note else []
        self._static = views.static
        for name, arr in self.inits.items():
            self.shapes[name] = list(arr.shape)
        self.producer = {}
        self.consumers = defaultdict(list)
        for node in g.node:
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers[i].append(node)

    @property
    def graph(self) -> onnx.GraphProto:
        """The ONNX graph."""
        return self.proto.graph

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        """Nodes in topological order."""
        return list(self.proto.graph.node)

    @property
    def opset(self) -> int:
        """Default-domain opset."""
        return default_opset(self.proto) or 0

    @property
    def input_names(self) -> list[str]:
        """Graph input names (initializers excluded)."""
        return [i.name for i in self.proto.graph.input if i.name not in self.inits]

    @property
    def output_names(self) -> list[str]:
        """Graph output names."""
        return [o.name for o in self.proto.graph.output]

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None when it is computed at run time."""
        return self.inits.get(name)

    def shape(self, name: str) -> list[Dim] | None:
        """Inferred dims of a tensor (None: unknown rank)."""
        return self.shapes.get(name)


InputSizes = InputShapes | Mapping[str, Sequence[int]] | None


def load(path: str | os.PathLike[str], normalise_graph: bool = True, input_shapes: InputSizes = None) -> ModelGraph:
    """Read, check and normalise an ONNX file, analysed at `input_shapes` (--input-shape values by input name;
    default: the file's static dims or its exporter's metadata); InputError (exit 2) on anything unusable."""
    p = Path(path)
    proto = _read(p)
    sizes = as_input_shapes(proto, input_shapes, p)
    norm = normalise(proto) if normalise_graph else infer_shapes(copy.deepcopy(proto))
    return ModelGraph(proto=norm, path=str(p), source=proto, input_shapes=sizes)


def from_proto(proto: onnx.ModelProto, normalise_graph: bool = True, input_shapes: InputSizes = None) -> ModelGraph:
    """A ModelGraph from an in-memory proto (tests, converters)."""
    opset = default_opset(proto)
    if opset is None or opset < MIN_OPSET or opset > MAX_OPSET:
        raise InputError(f"unsupported opset {opset} (supported: {MIN_OPSET}..{MAX_OPSET})")
    sizes = as_input_shapes(proto, input_shapes)
    norm = normalise(proto) if normalise_graph else infer_shapes(copy.deepcopy(proto))
    return ModelGraph(proto=norm, source=proto, input_shapes=sizes)
