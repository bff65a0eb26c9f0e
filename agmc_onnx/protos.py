"""Small readers and rewrites of ONNX protos that several layers share: one home for each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from agmc_onnx.errors import InputError

Dim = int | str | None
ModelRef = str | os.PathLike[str] | bytes | onnx.ModelProto | Any  # Any: an object with a `.proto`


def as_proto(model: ModelRef, load_external_data: bool = True) -> onnx.ModelProto:
    """A ModelProto from a path, serialized bytes, a ModelProto or an object holding one as `.proto`."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InputError("model file not found", path)
        try:
            return onnx.load(str(path), load_external_data=load_external_data)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise InputError(f"not a readable ONNX model ({type(exc).__name__})", path) from exc
    proto = getattr(model, "proto", None)
    if isinstance(proto, onnx.ModelProto):
        return proto
    raise InputError(f"cannot get an ONNX model out of {type(model).__name__}")


def attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The node's attributes as Python values (those named in `drop` left out)."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """One attribute's value, or `default`."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def dims(type_proto: onnx.TypeProto) -> list[Dim] | None:
    """Dims of a tensor type: int, symbol name, or None; None when the rank is unknown."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def opset(proto: onnx.ModelProto) -> int | None:
    """The default-domain opset version."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn tensor-valued Constant nodes into initializers so weights are plain constants (in place)."""
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            values = attrs(node)
            tensor = None
            if "value" in values:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(values["value"])
            elif "value_float" in values:
                tensor = numpy_helper.from_array(np.array(values["value_float"], dtype=np.float32))
            elif "value_floats" in values:
                tensor = numpy_helper.from_array(np.array(list(values["value_floats"]), dtype=np.float32))
            elif "value_int" in values:
                tensor = numpy_helper.from_array(np.array(values["value_int"], dtype=np.int64))
            elif "value_ints" in values:
                tensor = numpy_helper.from_array(np.array(list(values["value_ints"]), dtype=np.int64))
            if tensor is not None:
                tensor.name = node.output[0]
                graph.initializer.append(tensor)
                continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


# the float element types: weights, and what counts as a parameter
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16})  # fmt: skip
FOLDABLE = ("Unsqueeze", "Squeeze", "Concat", "Cast", "Reshape", "Gather", "Slice", "Add", "Sub", "Mul", "Div",
            "Identity", "ConstantOfShape", "Range", "Neg", "Floor", "Ceil")


def fold_small_constants(graph: onnx.GraphProto, opsets: list[onnx.OperatorSetIdProto]) -> None:
    """Evaluate small integer-parameter subgraphs (Unsqueeze of constants and such) so shapes infer (in place)."""
    from onnx.reference import ReferenceEvaluator

    consts = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        ins = [i for i in node.input if i]
        if (node.op_type in FOLDABLE and ins and all(i in consts for i in ins)
                and all(int(np.prod(consts[i].dims)) <= 4096 for i in ins) and len(node.output) == 1):
            try:
                sub = onnx.helper.make_graph(
                    [node], "fold", [], [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)],
                    [consts[i] for i in dict.fromkeys(ins)],
                )  # fmt: skip
                value = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=opsets)).run(None, {})[0]
            except Exception:  # not foldable by the reference evaluator: leave the node as it is
                keep.append(node)
                continue
            t = numpy_helper.from_array(np.asarray(value), node.output[0])
            graph.initializer.append(t)
            consts[t.name] = t
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
