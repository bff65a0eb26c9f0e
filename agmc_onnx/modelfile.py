"""Reading an ONNX file the one way every command does: readable, a model, a supported opset, under 2 GiB,
external data present, valid for onnx.checker, and weights that fit the graph and are finite.

onnx.checker and shape inference do not compare a Conv's weight with the channels that reach it (an
8x5x3x3 weight on a 3-channel input passes both; ONNX Runtime fails only when it runs the node), so the
weight shapes of Conv, ConvTranspose, Gemm, MatMul and the normalisations are checked here, cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from agmc_onnx.errors import InputError
from agmc_onnx.protos import FLOAT_TYPES, Dim, attr, dims
from agmc_onnx.protos import opset as default_opset

MIN_OPSET = 7
MAX_OPSET = 23
MAX_BYTES = 2**31 - 1  # protobuf's limit: a model (with its external data) at or above 2 GiB cannot be checked or written
# ops whose initializer operands are weights: NaN or inf there breaks every score
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
                        "LayerNormalization", "GroupNormalization", "PRelu"})  # fmt: skip


def read_model_file(path: str | os.PathLike[str], check_weights: bool = True) -> onnx.ModelProto:
    """Read and check a model file (weights included, external data loaded); every failure is an InputError
    naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("is a directory, not an ONNX file", p)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(f"not a readable ONNX file ({type(exc).__name__}: {str(exc)[:80]})", p) from exc
    if not proto.graph.node and not proto.graph.output:
        raise InputError("not an ONNX model (empty or not a ModelProto)", p)
    version = default_opset(proto)
    if version is None or version < MIN_OPSET or version > MAX_OPSET:
        raise InputError(f"unsupported opset {version} (supported: {MIN_OPSET}..{MAX_OPSET})", p)
    size = _total_bytes(proto, p)
    if size > MAX_BYTES:
        raise InputError(f"model is {size / 2**30:.1f} GiB with its external data: models of 2 GiB or more are not "
                         "supported (ONNX's protobuf limit; external-data output is not implemented)", p)
    for t in proto.graph.initializer:
        where = {e.key: e.value for e in t.external_data}.get("location")
        if t.data_location == onnx.TensorProto.EXTERNAL and where and not (p.parent / where).is_file():
            raise InputError(f"missing external data file {where} (tensor {t.name})", p)
    try:
        onnx.load_external_data_for_model(proto, str(p.parent))
    except FileNotFoundError as exc:
        raise InputError(f"missing external data file {Path(exc.filename or '?').name}", p) from exc
    except Exception as exc:
        raise InputError(f"cannot load the external data file ({str(exc).splitlines()[0][:200]})", p) from exc
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"invalid ONNX model ({msg})", p) from exc
    if check_weights:
        problem = weight_problem(proto)
        if problem:
            raise InputError(problem, p)
    return proto


def _total_bytes(proto: onnx.ModelProto, path: Path) -> int:
    """The file's size plus every external tensor's (by its `length`, else what its data file holds)."""
    total = path.stat().st_size
    for t in proto.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        if "length" in info:
            total += int(info["length"])
            continue
        data = path.parent / info.get("location", "")
        if data.is_file():
            total += max(0, data.stat().st_size - int(info.get("offset", 0) or 0))
    return total


def weight_problem(proto: onnx.ModelProto) -> str | None:
    """What is wrong with the model's weights (a shape that does not fit the graph, NaN or inf), or None."""
    return _non_finite(proto) or _misfit(proto)


def _non_finite(proto: onnx.ModelProto) -> str | None:
    """NaN in any float initializer, inf in a weight (an op of WEIGHT_OPS reads it)."""
    readers: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        for name in node.input:
            readers.setdefault(name, f"{node.op_type} {node.name or f'#{i}'!r}")
    weights = {name for node in proto.graph.node if node.op_type in WEIGHT_OPS for name in node.input}
    for t in proto.graph.initializer:
        if t.data_type not in FLOAT_TYPES:
            continue
        arr = numpy_helper.to_array(t)
        nan = int(np.isnan(arr).sum())
        inf = int(np.isinf(arr).sum()) if t.name in weights else 0
        if nan or inf:
            what = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
            return (f"initializer {t.name} (read by {readers.get(t.name, 'no node')}) has {what} value(s) of "
                    f"{arr.size}: weights must be finite (a diverged training run?)")
    return None


def _shapes(proto: onnx.ModelProto) -> dict[str, list[Dim]]:
    """Inferred dims of every tensor (initializers by their own dims); what inference cannot tell is left out."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # the checker passed; without inference only the initializers' own dims are known
        inferred = proto
    out: dict[str, list[Dim]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        d = dims(vi.type)
        if d is not None:
            out[vi.name] = d
    for t in proto.graph.initializer:
        out[t.name] = [int(x) for x in t.dims]
    return out


def _known(d: Dim) -> bool:
    return isinstance(d, int) and d > 0


def _fmt(shape: list[Dim]) -> str:
    return "x".join(str(d) for d in shape)


def _misfit(proto: onnx.ModelProto) -> str | None:
    """The first weight whose shape does not fit the channels that reach it (Conv/ConvTranspose/Gemm/MatMul/norms)."""
    shapes = _shapes(proto)
    for i, node in enumerate(proto.graph.node):
        check = _CHECKS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if check is None:
            continue
        ins = [shapes.get(name) if name else None for name in node.input]
        problem = check(node, ins)
        if problem:
            return f"{node.op_type} {node.name or f'#{i}'!r}: {problem}: the weights do not fit the graph"
    return None


def _conv(node: onnx.NodeProto, ins: list[list[Dim] | None]) -> str | None:
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    group = int(attr(node, "group", 1) or 1)
    if not x or not w or len(x) < 2 or len(w) < 2:
        return None
    if len(x) != len(w):
        return f"weight {node.input[1]} has rank {len(w)} ({_fmt(w)}), its input {node.input[0]!r} rank {len(x)}"
    if _known(x[1]) and _known(w[1]) and w[1] * group != x[1]:
        return (f"weight {node.input[1]} is {_fmt(w)} ({w[1]} input channels x group {group}) but its input "
                f"{node.input[0]!r} has {x[1]} channels")
    return _bias(node, ins, w[0])


def _bias(node: onnx.NodeProto, ins: list[list[Dim] | None], channels: Dim | None) -> str | None:
    """A Conv / ConvTranspose bias (input 2) that is not one vector of `channels` (unknown: not checked)."""
    b = ins[2] if len(ins) > 2 else None
    if b and _known(channels) and (len(b) != 1 or (_known(b[0]) and b[0] != channels)):
        return f"bias {node.input[2]} has shape {_fmt(b)} for {channels} output channels"
    return None


def _conv_transpose(node: onnx.NodeProto, ins: list[list[Dim] | None]) -> str | None:
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    group = int(attr(node, "group", 1) or 1)
    if not x or not w or len(x) < 2 or len(w) < 2:
        return None
    if _known(x[1]) and _known(w[0]) and w[0] != x[1]:
        return f"weight {node.input[1]} is {_fmt(w)} ({w[0]} input channels) but its input {node.input[0]!r} has {x[1]} channels"
    return _bias(node, ins, w[1] * group if _known(w[1]) else None)


def _norm(node: onnx.NodeProto, ins: list[list[Dim] | None]) -> str | None:
    x = ins[0]
    if not x or len(x) < 2 or not _known(x[1]):
        return None
    for name, shape in zip(node.input[1:], ins[1:], strict=False):
        if shape is not None and (len(shape) != 1 or (_known(shape[0]) and shape[0] != x[1])):
            return f"parameter {name} has shape {_fmt(shape)} but its input {node.input[0]!r} has {x[1]} channels"
    return None


def _gemm(node: onnx.NodeProto, ins: list[list[Dim] | None]) -> str | None:
    a, b = ins[0], ins[1] if len(ins) > 1 else None
    if not a or not b or len(a) != 2 or len(b) != 2:
        return None
    k_a = a[0] if attr(node, "transA", 0) else a[1]
    k_b, n = (b[1], b[0]) if attr(node, "transB", 0) else (b[0], b[1])
    if _known(k_a) and _known(k_b) and k_a != k_b:
        return f"weight {node.input[1]} is {_fmt(b)} for {k_b} features but its input {node.input[0]!r} has {k_a}"
    c = ins[2] if len(ins) > 2 else None
    if c and _known(n) and _known(c[-1]) and c[-1] not in (1, n):
        return f"bias {node.input[2]} has shape {_fmt(c)} for {n} outputs"
    return None


def _matmul(node: onnx.NodeProto, ins: list[list[Dim] | None]) -> str | None:
    a, b = ins[0], ins[1] if len(ins) > 1 else None
    if not a or not b or len(b) != 2:
        return None
    if _known(a[-1]) and _known(b[0]) and a[-1] != b[0]:
        return f"weight {node.input[1]} is {_fmt(b)} for {b[0]} features but its input {node.input[0]!r} has {a[-1]}"
    return None


_CHECKS: dict[str, Callable[[onnx.NodeProto, list[list[Dim] | None]], str | None]] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "BatchNormalization": _norm, "InstanceNormalization": _norm,
    "Gemm": _gemm, "MatMul": _matmul,
}  # fmt: skip


def image_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not weights (old IRs list initializers as inputs too)."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def output_classes(proto: onnx.ModelProto) -> int | None:
    """Number of classes of a classifier: axis 1 of the first graph output (what accuracy takes argmax over)."""
    if not proto.graph.output:
        return None
    d = dims(proto.graph.output[0].type)
    return d[1] if d and len(d) >= 2 and _known(d[1]) else None
