"""Fold run-time Reshape targets and Expand shapes whose only unknown is the batch (issue 15, item 3).

Exporters at opset >= 17 write attention's Reshape targets as `Concat(Unsqueeze(Gather(Shape(x), 0)), c..)`
(onnxslim cannot fold them: its shape inference stops at LayerNormalization); torchvision's
MultiheadAttention multiplies the batch by the head count (`Gather(Shape, 1) * c_heads`), Swin divides
windows out of it. The channel ids cannot follow a shape known only at run time, so the analysis would
freeze every head. This pass evaluates those shape subgraphs (in ONNX Runtime, at batch 1 and 2) and:
- replaces a Reshape target by a constant where every entry is static or one entry is proportional to
  the batch (written -1);
- replaces an Expand shape by `Concat(Shape(input)[:1], constants)` where the entries are static and at
  most the first is the batch itself (the class token expanded over the batch).
The model is left as it is (a folded copy is returned). Only subgraphs of pure shape arithmetic (Shape, Gather, Slice, Concat, (Un)Squeeze, integer Add/Sub/Mul/Div,
Cast, Equal/Where, ...) are read, so the values do not depend on the input data. Targets that depend on
anything else (a dynamic spatial size, data) stay as they are, and the op rules say why they freeze.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

SHAPE_OPS = frozenset({
    "Shape", "Size", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Mul", "Div", "Add", "Sub", "Cast",
    "Equal", "Where", "Identity", "Neg", "Floor", "Ceil", "Max", "Min", "Abs", "ReduceProd", "Not", "Mod",
})  # fmt: skip


def _shape_only(name: str, producer: dict[str, onnx.NodeProto], inits: set[str]) -> bool:
    """True when `name` is computed from constants and Shape/Size nodes by shape arithmetic only."""
    seen: set[str] = set()
    stack = [name]
    found_shape = False
    while stack:
        t = stack.pop()
        if t in seen or t in inits or not t:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or node.op_type not in SHAPE_OPS:
            return False
        if node.op_type in ("Shape", "Size"):
            found_shape = True
            continue
        stack.extend(node.input)
    return found_shape


def _batch_inputs(proto: onnx.ModelProto) -> tuple[list[tuple[str, int, list[int]]], str] | None:
    """(name, elem type, dims with the batch as 0) of every graph input, and the batch input's name; None
    unless every input is static but for a shared first dim (or all static)."""
    inits = {t.name for t in proto.graph.initializer}
    out = []
    batch_input = ""
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            return None
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(0)
                batch_input = batch_input or vi.name
            else:
                return None
        out.append((vi.name, int(tt.elem_type), dims))
    return (out, batch_input) if out else None


def _feeds(inputs: list[tuple[str, int, list[int]]], batch: int) -> dict[str, np.ndarray]:
    """Random feeds at a batch size (data does not matter: only shapes are read)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for name, elem, dims in inputs:
        shape = [batch if d == 0 else d for d in dims]
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        feeds[name] = (rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)).astype(dtype)
    return feeds


def _evaluate(proto: onnx.ModelProto, probes: list[onnx.NodeProto], names: list[str],
              inputs: list[tuple[str, int, list[int]]], batches: tuple[int, ...]) -> list[dict[str, np.ndarray]] | None:
    """Values of tensors `names` at each batch size, by running the model (with `probes` added for the run
    only: the model is serialised with them and given back as it was) in ONNX Runtime; None on failure."""
    from agmc_onnx.runtime import ort

    g = proto.graph
    present = {o.name for o in g.output}
    extra = [n for n in names if n not in present]
    g.node.extend(probes)
    g.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
    try:
        data = proto.SerializeToString()
    finally:
        del g.node[len(g.node) - len(probes):]
        del g.output[len(g.output) - len(extra):]
    rt = ort()
    opts = rt.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = rt.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = rt.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        outs = [o.name for o in sess.get_outputs()]
        return [dict(zip(outs, sess.run(None, _feeds(inputs, b)), strict=True)) for b in batches]
    except Exception as exc:  # a model ORT cannot run here: leave its shapes as they are
        log.debug("shape folding skipped: %s", exc)
        return None


Entry = int | tuple[str, int]  # a static value, or ("batch", k): k times the batch


def _classify(values: list[np.ndarray], batches: tuple[int, ...]) -> list[Entry] | None:
    """Per entry of a shape evaluated at each batch size: its static value, or ("batch", k) when it is k times
    the batch; None when some entry is neither (or the length changes)."""
    v = [np.asarray(x).reshape(-1).astype(np.int64) for x in values]
    if any(x.shape != v[0].shape for x in v):
        return None
    out: list[Entry] = []
    for j in range(v[0].size):
        col = [int(x[j]) for x in v]
        if all(c == col[0] for c in col):
            out.append(col[0])
        elif col[0] > 0 and col[0] % batches[0] == 0 and all(
                c * batches[0] == col[0] * b for c, b in zip(col, batches, strict=True)):
            out.append(("batch", col[0] // batches[0]))
        else:
            return None
    return out


def fold_shape_targets(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with foldable run-time Reshape targets and Expand shapes made constant (module docstring);
    the model itself when there is nothing to fold or it cannot be evaluated."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output if o}
    reshapes = [k for k, n in enumerate(g.node) if n.op_type == "Reshape" and len(n.input) > 1
                and n.input[1] not in inits and _shape_only(n.input[1], producer, inits)
                and not any(a.name == "allowzero" and a.i for a in n.attribute)]
    expands = [k for k, n in enumerate(g.node) if n.op_type == "Expand" and n.input[1] not in inits
               and _shape_only(n.input[1], producer, inits)]
    if not reshapes and not expands:
        return proto
    found = _batch_inputs(proto)
    if found is None:
        return proto
    inputs, batch_input = found
    batches = (1, 2)
    probes = {k: f"__fold_shape_{k}" for k in reshapes}  # the resolved output dims (-1 and 0 entries included)
    nodes = [helper.make_node("Shape", [g.node[k].output[0]], [name], name=name) for k, name in probes.items()]
    values = _evaluate(proto, nodes, list(probes.values()) + [g.node[k].input[1] for k in expands], inputs, batches)
    if values is None:
        return proto
    out = copy.deepcopy(proto)
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # index -> nodes to insert before it
    for k in reshapes:
        kinds = _classify([v[probes[k]] for v in values], batches)
        if kinds is None or sum(isinstance(e, tuple) for e in kinds) > 1:
            continue
        name = f"{out.graph.node[k].input[1]}__folded{k}"
        target = np.array([-1 if isinstance(e, tuple) else e for e in kinds], dtype=np.int64)
        out.graph.initializer.append(numpy_helper.from_array(target, name))
        out.graph.node[k].input[1] = name
        new_nodes[k] = []
    for k in expands:
        kinds = _classify([v[g.node[k].input[1]] for v in values], batches)
        if kinds is None or any(isinstance(e, tuple) for e in kinds[1:]) or (
                kinds and isinstance(kinds[0], tuple) and kinds[0] != ("batch", 1)):
            continue
        new_nodes[k] = _fold_expand(out.graph, out.graph.node[k], kinds, batch_input, k)
    if not new_nodes:
        return proto
    nodes = list(out.graph.node)
    del out.graph.node[:]
    for k, n in enumerate(nodes):  # new shape nodes just before their Expand: the graph stays sorted
        out.graph.node.extend(new_nodes.get(k, []) + [n])
    _drop_dead(out.graph)
    return out


def _fold_expand(g: onnx.GraphProto, node: onnx.NodeProto, kinds: list[Entry], batch_input: str, k: int
                 ) -> list[onnx.NodeProto]:
    """Set an Expand's shape to constants, or to Concat(Gather(Shape(batch input), [0]), constants) when its
    first entry is the batch; returns the nodes that computes it."""
    name = f"{node.input[1]}__folded{k}"
    rest = np.array([e for e in kinds if not isinstance(e, tuple)], dtype=np.int64)
    node.input[1] = name
    if not kinds or not isinstance(kinds[0], tuple):
        g.initializer.append(numpy_helper.from_array(rest, name))
        return []
    shape, index = f"{name}_shape", f"{name}_index"
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), index),
                          numpy_helper.from_array(rest, f"{name}_rest")])
    return [
        helper.make_node("Shape", [batch_input], [shape], name=shape),
        helper.make_node("Gather", [shape, index], [f"{name}_batch"], name=f"{name}_batch", axis=0),
        helper.make_node("Concat", [f"{name}_batch", f"{name}_rest"], [name], name=name, axis=0),
    ]


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes (and initializers) nothing reads any more; the caller sorts the graph afterwards."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | outputs
    inits = [t for t in graph.initializer if t.name in used]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)

