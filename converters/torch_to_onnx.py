"""torch.nn.Module -> ONNX: TorchScript exporter, same I/O names, dynamic batch, BN kept."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from agmc_onnx.errors import AgmcError, InputError
from converters.onnx_to_torch import MAX_OPSET, MIN_OPSET


def export_opset(opset: int | None) -> int:
    """The opset to write: the model's own when onnx2torch reads it back, else the nearest that is."""
    if opset is None:
        return MIN_OPSET
    return max(MIN_OPSET, min(MAX_OPSET, int(opset)))


def _sample_inputs(
    shapes: Sequence[Sequence[int | str]], batch: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Random float inputs of the given shapes, the batch axis set to `batch`."""
    tensors = []
    for shape in shapes:
        dims = [batch] + list(shape[1:])
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise InputError(f"input shape {list(shape)} has symbolic non-batch axes: pass sample_inputs")
        tensors.append(torch.randn(*dims, device=device))
    return tuple(tensors)


def _device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU when it holds none)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_onnx(
    module: nn.Module,
    path: str | Path | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    sample_inputs: tuple[torch.Tensor, ...] | None = None,
    opset: int | None = None,
) -> onnx.ModelProto:
    """Export `module` in eval mode (BN kept, batch dynamic); names default to those to_torch recorded."""
    input_names = list(input_names or getattr(module, "onnx_input_names", None) or ["input"])
    output_names = list(output_names or getattr(module, "onnx_output_names", None) or ["output"])
    opset = export_opset(opset if opset is not None else getattr(module, "onnx_opset", None))
    if sample_inputs is None:
        shapes = getattr(module, "onnx_input_shapes", None)
        if shapes is None:
            raise InputError("to_onnx needs sample_inputs for a module that did not come from to_torch")
        sample_inputs = _sample_inputs(shapes, 2, _device(module))
    dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                sample_inputs,
                buffer,
                dynamo=False,
                opset_version=opset,
                do_constant_folding=False,  # constant folding in eval mode would fold BN into Conv
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
            )
    except Exception as exc:
        raise AgmcError(f"torch.onnx.export failed at opset {opset}: {exc}") from exc
    finally:
        module.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != input_names or got_out != output_names:
        raise AgmcError(f"exported names {got_in} -> {got_out} differ from {input_names} -> {output_names}")
    onnx.checker.check_model(proto)
    if path is not None:
        _save_atomic(proto, Path(path))
    return proto


def _save_atomic(proto: onnx.ModelProto, path: Path) -> None:
    """Write the model next to `path` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
