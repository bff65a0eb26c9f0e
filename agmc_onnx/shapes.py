"""Tensor shapes at a fixed input size: ONNX shape inference, then the shape subgraphs folded at that size,
then (for what is still unknown, e.g. a Loop's carried output or an op without shape inference) one run
in ONNX Runtime.

A file with dynamic input sizes computes its Reshape targets and Resize sizes from Shape(x) at run time;
ONNX's data propagation resolves few of them, so every tensor after the first such Reshape has no shape.
With the inputs fixed, Shape(x) is a constant: folding it (and the small integer ops it feeds) until
nothing changes gives the shapes at that size. Only shapes come from here: the graph itself (what surgery
rewrites and writes) keeps its symbolic dims and its shape subgraphs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from agmc_onnx.inputs import InputDim, with_input_dims
from agmc_onnx.protos import FLOAT_TYPES, FOLDABLE, Dim, constants_to_initializers, dims, fold_small_constants

log = logging.getLogger(__name__)

Shapes = dict[str, list[Dim] | None]
MAX_FOLD_ROUNDS = 20


def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation; the input model when inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:
        log.warning("shape inference failed: %s", exc)
        return proto


def shapes_of(proto: onnx.ModelProto) -> Shapes:
    """Dims of every graph input, value_info, output and initializer of an (inferred) model."""
    g = proto.graph
    out: Shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        out[vi.name] = dims(vi.type)
    for t in g.initializer:
        out[t.name] = [int(d) for d in t.dims]
    return out


def _static(shape: list[Dim] | None) -> bool:
    """True for a known rank with every dim a number."""
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


_NUMPY_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Identity", "Reshape", "Add", "Sub", "Mul",
              "Neg")


def _axes(node: onnx.NodeProto, values: list[np.ndarray], at: int) -> list[int] | None:
    """An axes list given as attribute (old opsets) or as input `at` (new ones)."""
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    return [int(v) for v in values[at].reshape(-1)] if len(values) > at else None


def _numpy_op(node: onnx.NodeProto, values: list[np.ndarray]) -> np.ndarray | None:
    """One small integer op evaluated with numpy (the shape arithmetic exporters write); None: not handled."""
    op, a = node.op_type, {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    x = values[0]
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if op == "Gather":
        return np.take(x, values[1].astype(np.int64), axis=int(a.get("axis", 0)))
    if op == "Concat":
        return np.concatenate(values, axis=int(a["axis"]))
    if op == "Unsqueeze":
        axes = _axes(node, values, 1)
        if axes is None:
            return None
        out = x
        for ax in sorted(ax % (x.ndim + len(axes)) for ax in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Squeeze":
        axes = _axes(node, values, 1)
        return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes))
    if op == "Reshape" and not a.get("allowzero", 0):
        shape = [int(d) if d != 0 else x.shape[i] for i, d in enumerate(values[1].reshape(-1))]
        return x.reshape(shape)
    if op in ("Add", "Sub", "Mul") and x.dtype.kind in "iu" and values[1].dtype == x.dtype:
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x, values[1])
    if op == "Neg" and x.dtype.kind == "i":
        return -x
    if op == "Slice" and len(values) >= 3:
        axes = [int(v) for v in values[3].reshape(-1)] if len(values) > 3 else list(range(len(values[1].reshape(-1))))
        steps = [int(v) for v in values[4].reshape(-1)] if len(values) > 4 else [1] * len(axes)
        idx = [slice(None)] * x.ndim
        for ax, st, en, sp in zip(axes, values[1].reshape(-1), values[2].reshape(-1), steps, strict=True):
            idx[ax % x.ndim] = slice(int(st), int(en), sp)
        return x[tuple(idx)]
    return None


def _fold_constants(graph: onnx.GraphProto, opsets: list[onnx.OperatorSetIdProto]) -> int:
    """Evaluate the small integer ops whose inputs are all constants (numpy for the usual shape arithmetic,
    onnx.reference for the rest); their outputs become initializers (in place). How many were folded."""
    consts = {t.name: t for t in graph.initializer}
    keep, n = [], 0
    for node in graph.node:
        ins = [i for i in node.input if i]
        if (node.op_type in FOLDABLE and node.domain in ("", "ai.onnx") and ins and len(node.output) == 1
                and all(i in consts and int(np.prod(consts[i].dims)) <= 4096 for i in ins)):  # fmt: skip
            values = [numpy_helper.to_array(consts[i]) for i in node.input if i]
            value = _numpy_op(node, values) if node.op_type in _NUMPY_OPS and len(ins) == len(node.input) else None
            if value is None:
                keep.append(node)
                continue
            t = numpy_helper.from_array(np.asarray(value), node.output[0])
            graph.initializer.append(t)
            consts[t.name] = t
            n += 1
            continue
        keep.append(node)
    if n:
        del graph.node[:]
        graph.node.extend(keep)
    fold_small_constants(graph, opsets)  # what numpy did not handle (onnx.reference)
    return n


def _weightless(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large float initializers turned into typed graph inputs: shape inference reads
    only their types, so it need not serialise megabytes of weights on every call."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    keep = []
    for t in out.graph.initializer:
        if t.data_type in FLOAT_TYPES and int(np.prod(t.dims)) > 64:
            out.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            keep.append(t)
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out


def _fold_shape_nodes(graph: onnx.GraphProto, shapes: Shapes) -> int:
    """Replace Shape/Size nodes whose input has a static shape by constants (in place); how many."""
    keep, folded = [], 0
    for node in graph.node:
        src = shapes.get(node.input[0]) if node.input else None
        if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx") and _static(src):
            assert src is not None
            if node.op_type == "Size":
                value = np.array(int(np.prod(src)), dtype=np.int64)
            else:
                a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
                value = np.array(src[int(a.get("start", 0)) : a.get("end")], dtype=np.int64)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            folded += 1
            continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
    return folded


def _incomplete(proto: onnx.ModelProto, shapes: Shapes, allowed: Sequence[str] = ()) -> list[str]:
    """Main-graph node outputs whose rank is unknown or that have a dim other than a number or a name in `allowed`."""
    out = []
    for node in proto.graph.node:
        for o in node.output:
            if not o:
                continue
            s = shapes.get(o)
            if s is None or any(not (isinstance(d, int) and d >= 0) and d not in allowed for d in s):
                out.append(o)
    return out


def _runtime_shapes(proto: onnx.ModelProto, inputs: Mapping[str, Sequence[int]], names: list[str]) -> Shapes:
    """Shapes of `names` from one ONNX Runtime run at the given input dims (random inputs); {} when it fails."""
    if not names:
        return {}
    try:
        from agmc_onnx.runtime import ort

        rt = ort()
        m = onnx.ModelProto()
        m.CopyFrom(proto)
        have = {o.name for o in m.graph.output}
        extra = [n for n in dict.fromkeys(names) if n not in have]
        for n in extra:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
        opts = rt.SessionOptions()
        opts.log_severity_level = 4
        sess = rt.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for arg in sess.get_inputs():
            if arg.name not in inputs:
                continue
            dtype = np.dtype(_ORT_TYPES.get(arg.type, "float32"))
            shape = list(inputs[arg.name])
            feeds[arg.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                               else np.zeros(shape, dtype=dtype))  # fmt: skip
        outs = sess.run([o.name for o in m.graph.output], feeds)
    except Exception as exc:  # a file ORT cannot run: the shapes stay unknown
        log.warning("could not run the model to read its shapes: %s", str(exc).splitlines()[0][:200])
        return {}
    got = {o.name: v for o, v in zip(m.graph.output, outs, strict=True)}
    return {n: [int(d) for d in np.shape(got[n])] for n in names if n in got and isinstance(got[n], np.ndarray)}


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}  # fmt: skip


def static_shapes(proto: onnx.ModelProto, inputs: Mapping[str, Sequence[int]]) -> Shapes:
    """Shapes of every tensor with the inputs at `inputs` (all dims numbers): inference, shape subgraphs
    folded until nothing changes, then one ONNX Runtime run for what is still unknown."""
    work = _weightless(with_input_dims(proto, inputs))
    constants_to_initializers(work.graph)
    inferred = infer(work)
    shapes = shapes_of(inferred)
    for t in proto.graph.initializer:
        shapes[t.name] = [int(d) for d in t.dims]
    for _ in range(MAX_FOLD_ROUNDS):
        if not _incomplete(proto, shapes):
            break
        n_nodes = len(work.graph.node)
        folded = _fold_shape_nodes(work.graph, shapes)
        _fold_constants(work.graph, list(work.opset_import))
        if not folded and len(work.graph.node) == n_nodes:
            break
        del work.graph.value_info[:]
        inferred = infer(work)
        shapes.update(shapes_of(inferred))
    missing = _incomplete(proto, shapes)
    if missing:
        for name, s in _runtime_shapes(proto, inputs, missing).items():
            shapes[name] = s
    return shapes


@dataclass
class ShapeViews:
    """Shapes at the run's input size: `view` keeps a symbolic batch symbolic (what op rules read, so a
    Reshape that mixes the batch in stays visible), `static` is at batch 1 (what costs read)."""

    view: Shapes
    static: Shapes | None  # None: not computed yet (a file whose inference is complete needs it only for costs)
    filled: list[str] = field(default_factory=list)  # tensors whose view shape came from the folded graphs


def at_batch(dims: Mapping[str, Sequence[InputDim]], batch: int) -> dict[str, list[int]]:
    """Input dims with every symbolic (batch) dim set to `batch`."""
    return {n: [batch if isinstance(d, str) else int(d) for d in ds] for n, ds in dims.items()}


def shape_views(proto: onnx.ModelProto, dims: Mapping[str, Sequence[InputDim]], declared: Shapes | None = None) -> ShapeViews:
    """Both views of `proto` at input dims `dims` (ints; the batch may be a symbol). `declared`: shapes
    already inferred on `proto` (reused when the inputs already declare `dims`)."""
    symbols = sorted({d for ds in dims.values() for d in ds if isinstance(d, str)})
    same = declared is not None and all(declared.get(n) == list(ds) for n, ds in dims.items())
    view = dict(declared) if same and declared is not None else shapes_of(infer(_weightless(with_input_dims(proto, dims))))
    todo = _incomplete(proto, view, symbols)
    if not todo:
        return ShapeViews(view, None)
    static = static_shapes(proto, at_batch(dims, 1))
    at_two = static_shapes(proto, at_batch(dims, 2)) if symbols else static
    batch = symbols[0] if symbols else None
    for name in todo:
        s1, s2 = static.get(name), at_two.get(name)
        if s1 is None or s2 is None or len(s1) != len(s2):
            continue
        old = view.get(name)
        merged: list[Dim] = []
        for k, (a, b) in enumerate(zip(s1, s2, strict=True)):
            if a == b:
                merged.append(a)
            elif (a, b) == (1, 2) and batch is not None:
                merged.append(batch)
            else:  # follows the batch some other way (batch x heads): keep what inference said
                merged.append(old[k] if old is not None and len(old) == len(s1) else None)
        view[name] = merged
    return ShapeViews(view, static, todo)
