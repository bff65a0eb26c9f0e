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
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> onnx.ModelProto:
    """Export `module` in eval mode (BN kept); names default to those to_torch recorded. Axes named in
    `dynamic_axes` ({input or output name: {axis: dim name}}) stay symbolic; by default axis 0 of every input
    and output ("batch")."""
    input_names = list(input_names or getattr(module, "onnx_input_names", None) or ["input"])
    output_names = list(output_names or getattr(module, "onnx_output_names", None) or ["output"])
    opset = export_opset(opset if opset is not None else getattr(module, "onnx_opset", None))
    if sample_inputs is None:
        shapes = getattr(module, "onnx_input_shapes", None)
        if shapes is None:
            raise InputError("to_onnx needs sample_inputs for a module that did not come from to_torch")
        sample_inputs = _sample_inputs(shapes, 2, _device(module))
    if dynamic_axes is None:
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


def declared_axes(proto: onnx.ModelProto) -> dict[str, dict[int, str]]:
    """The symbolic axes a model file declares on its inputs and outputs ({name: {axis: dim name}}), so that a
    re-export keeps them (a PaddleOCR or YOLO export's dynamic height and width, not only its batch). An
    output with no declared shape gets axis 0, named as the first input's axis 0."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in inits]
    axes: dict[str, dict[int, str]] = {}
    for v in [*inputs, *proto.graph.output]:
        dims = v.type.tensor_type.shape.dim
        named = {i: d.dim_param or f"{v.name}_{i}" for i, d in enumerate(dims) if not d.HasField("dim_value")}
        if named:
            axes[v.name] = named
    batch = axes.get(inputs[0].name, {}).get(0) if inputs else None
    for v in proto.graph.output:
        if batch is not None and not v.type.tensor_type.shape.dim:
            axes[v.name] = {0: batch}
    return axes


def check_other_size(proto: onnx.ModelProto, module: nn.Module, samples: tuple[torch.Tensor, ...],
                     tol: float = 1e-3) -> tuple[int, ...] | None:  # fmt: skip
    """A re-export that declares symbolic image axes must still run at another size: the first input's
    symbolic axes 2/3 grown by 32 (strides up to 32 divide it), ONNX Runtime against the torch module. Tracing
    can bake a size into the graph; that raises here instead of writing a file that fails later. Returns the
    size checked, or None when nothing is symbolic beyond the batch or the module itself refuses the size."""
    from agmc_onnx.runtime import session

    axes = declared_axes(proto).get(proto.graph.input[0].name, {})
    x = samples[0]
    if len(samples) != 1 or x.dim() != 4 or not ({2, 3} & set(axes)):
        return None
    size = tuple(x.shape[i] + 32 if i in axes else x.shape[i] for i in (2, 3))
    bigger = torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).to(x.dtype)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            want = module(bigger)
    except Exception:  # the module itself does not take that size (e.g. a fixed position table): nothing to check
        return None
    finally:
        module.train(was_training)
    want_all = [t.cpu().numpy() for t in (want if isinstance(want, (tuple, list)) else [want])]
    try:
        got = session(proto, threads=1).run(None, {proto.graph.input[0].name: bigger.cpu().numpy()})
    except Exception as exc:
        raise AgmcError(f"the re-exported model does not run at {size[0]}x{size[1]} although it declares "
                        f"those axes dynamic (tracing fixed a size): {str(exc).splitlines()[0][:200]}") from exc  # fmt: skip
    for g, w in zip(got, want_all, strict=True):
        scale = max(1.0, float(abs(w).max()))
        if g.shape != w.shape or float(abs(g - w).max()) > tol * scale:
            raise AgmcError(f"the re-exported model differs from torch at {size[0]}x{size[1]} although it declares "
                            "those axes dynamic (tracing fixed a size)")  # fmt: skip
    return (x.shape[0], x.shape[1], *size)
