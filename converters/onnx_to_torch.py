"""ONNX -> torch.nn.Module through onnx2torch, with trainable weights and clear errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
from torch import fx, nn

from agmc_onnx.errors import InputError

# Opsets the exporter writes and onnx2torch reads back (dynamo writes 18+, which it cannot read).
MIN_OPSET = 13
MAX_OPSET = 17

# Module classes (by name) whose float initializer inputs are weights worth training.
_WEIGHT_MODULES = {"OnnxMatMul", "OnnxGemm", "OnnxPReLU", "OnnxInstanceNorm", "OnnxLayerNorm"}


class ConversionError(InputError):
    """An ONNX node that onnx2torch cannot convert; the message names the op, its opset and node."""


def _register_extra_converters() -> None:
    """Add converters for common CNN ops that onnx2torch 1.5 lacks (GlobalMaxPool)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    if OperationDescription("", "GlobalMaxPool", 1) in _CONVERTER_REGISTRY:
        return

    @add_converter(operation_type="GlobalMaxPool", version=1)
    def _global_max_pool(node: Any, graph: Any) -> Any:
        """GlobalMaxPool over the spatial axes of an NCHW tensor."""
        return OperationConverterResult(
            torch_module=nn.AdaptiveMaxPool2d(1),
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
        )


_register_extra_converters()


def _opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ConversionError("the model imports no default-domain opset")


def unsupported_nodes(model: onnx.ModelProto) -> list[tuple[str, str, str, int]]:
    """(node name, domain, op type, opset) of every node onnx2torch has no converter for."""
    from onnx2torch.node_converters import get_converter

    opsets = {entry.domain: int(entry.version) for entry in model.opset_import}
    missing = []
    for node in model.graph.node:
        version = opsets.get(node.domain, opsets.get("ai.onnx" if node.domain == "" else node.domain, 0))
        try:
            get_converter(domain=node.domain, operation_type=node.op_type, version=version)
        except NotImplementedError:
            missing.append((node.name, node.domain, node.op_type, version))
    return missing


@contextlib.contextmanager
def _named_failures() -> Iterator[None]:
    """Make a converter failure inside onnx2torch name the node, op type and opset."""
    import onnx2torch.converter as o2t

    original: Callable[..., Any] = o2t.get_converter

    def wrapped(domain: str, operation_type: str, version: int) -> Callable[..., Any]:
        converter = original(domain=domain, operation_type=operation_type, version=version)

        def convert_node(node: Any, graph: Any) -> Any:
            try:
                return converter(node, graph)
            except (NotImplementedError, KeyError, ValueError) as exc:
                raise ConversionError(
                    f"cannot convert node {node.name!r} ({operation_type}, opset {version}) to torch: {exc}"
                ) from exc

        return convert_node

    o2t.get_converter = wrapped
    try:
        yield
    finally:
        o2t.get_converter = original


def _make_weights_trainable(module: fx.GraphModule) -> list[str]:
    """Turn float initializers that feed weight-like ops (MatMul, PReLU, ...) into parameters."""
    container = getattr(module, "initializers", None)
    if container is None:
        return []
    promoted = []
    for node in module.graph.nodes:
        if node.op != "get_attr" or not str(node.target).startswith("initializers."):
            continue
        name = str(node.target).split(".", 1)[1]
        tensor = container._buffers.get(name)
        if tensor is None or not tensor.is_floating_point() or tensor.numel() < 2:
            continue
        users = [u for u in node.users if u.op == "call_module"]
        if any(type(module.get_submodule(str(u.target))).__name__ in _WEIGHT_MODULES for u in users):
            del container._buffers[name]
            container.register_parameter(name, nn.Parameter(tensor.detach().clone()))
            promoted.append(name)
    return promoted


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Read a model from a path, or pass a ModelProto through."""
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except Exception as exc:  # onnx raises several types for unreadable files
        raise InputError(f"cannot read ONNX model: {exc}", model) from exc


def _io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Graph input names (initializers excluded) and output names."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits], [o.name for o in model.graph.output]


def _input_shapes(model: onnx.ModelProto) -> list[list[int | str]]:
    """Each graph input's shape, symbolic dims as their names (or '?')."""
    inits = {i.name for i in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims: list[int | str] = []
        for dim in value.type.tensor_type.shape.dim:
            dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
        shapes.append(dims)
    return shapes


def to_torch(model: str | Path | onnx.ModelProto, trainable: bool = True) -> fx.GraphModule:
    """Convert an ONNX model to an fx.GraphModule in eval mode; ONNX names and opset ride along."""
    proto = _load(model)
    opset = _opset(proto)
    missing = unsupported_nodes(proto)
    if missing:
        name, domain, op, version = missing[0]
        more = (
            f" (and {len(missing) - 1} more node(s): {sorted({m[2] for m in missing[1:]})})"
            if len(missing) > 1
            else ""
        )
        where = f"{domain}::" if domain else ""
        raise ConversionError(
            f"onnx2torch has no converter for op {where}{op} at opset {version} "
            f"(node {name!r}){more}; re-export the model with opset {MIN_OPSET}-{MAX_OPSET} "
            "(torch.onnx.export(..., dynamo=False)) or replace the op"
        )
    from onnx2torch import convert

    with _named_failures():
        try:
            module = convert(proto)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"onnx2torch failed on a model with opset {opset}: {exc}") from exc
    if trainable:
        _make_weights_trainable(module)
    inputs, outputs = _io_names(proto)
    module.onnx_input_names = inputs
    module.onnx_output_names = outputs
    module.onnx_input_shapes = _input_shapes(proto)
    module.onnx_opset = opset
    return module.eval()
