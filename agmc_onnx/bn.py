"""BatchNorm re-calibration (EagleEye's adaptive BN) and writing re-estimated statistics into an ONNX file.

Re-estimating each candidate's BN statistics (running stats reset, cumulative average over the
calibration images, no gradient) is what makes the accuracy of an un-fine-tuned candidate a usable
reward; `recalibrated_onnx` does the same to a written model so that what is written is what was scored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from agmc_onnx.data import fixed_batch
from agmc_onnx.devices import device_default
from converters import to_torch


def bn_modules(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The module's BN layers in registration order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_bn(module: nn.Module, images: Tensor | Sequence[Tensor], batch_size: int = 256) -> None:
    """EagleEye adaptive BN: reset running stats, cumulative average over `images` in train mode, no gradient.
    `images` is the model's input, or one tensor per model input."""
    inputs = [images] if isinstance(images, Tensor) else list(images)
    bns = bn_modules(module)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.inference_mode():
        for i in range(0, len(inputs[0]), batch_size):
            module(*(t[i : i + batch_size] for t in inputs))
    for m in bns:
        m.eval()


def bn_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The BatchNormalization nodes of a model, in graph order."""
    return [n for n in proto.graph.node if n.op_type == "BatchNormalization"]


def write_bn_stats(proto: onnx.ModelProto, module: nn.Module) -> onnx.ModelProto:
    """A copy of `proto` whose BN mean/var initializers hold `module`'s running statistics.

    `module` is `proto` converted by onnx2torch, which adds one BN module per BatchNormalization
    node in graph order; the pairing is checked (count, width, scale values) and a mismatch raises.
    """
    from onnx import numpy_helper

    nodes, bns = bn_nodes(proto), bn_modules(module)
    if len(nodes) != len(bns):
        raise LookupError(f"{len(nodes)} BatchNormalization nodes but {len(bns)} BN modules after conversion")
    out = copy.deepcopy(proto)
    inits = {t.name: i for i, t in enumerate(out.graph.initializer)}
    written: dict[str, np.ndarray] = {}
    for node, bn in zip(nodes, bns, strict=True):
        scale = numpy_helper.to_array(out.graph.initializer[inits[node.input[1]]]) if node.input[1] in inits else None
        if scale is None or scale.shape != (bn.num_features,) or (
            bn.weight is not None and not np.allclose(scale, bn.weight.detach().cpu().numpy())
        ):
            raise LookupError(f"BN node {node.name!r} does not pair with the converted module's BN layer")
        for name, value in ((node.input[3], bn.running_mean), (node.input[4], bn.running_var)):
            if name not in inits:
                raise LookupError(f"BN statistic {name!r} of {node.name!r} is not an initializer")
            arr = value.detach().cpu().numpy()
            if name in written and not np.array_equal(written[name], arr):
                raise LookupError(f"BN statistic {name!r} is shared by BN layers with different statistics")
            old = out.graph.initializer[inits[name]]
            dtype = numpy_helper.to_array(old).dtype
            old.CopyFrom(numpy_helper.from_array(arr.astype(dtype), name))
            written[name] = arr
    return out


def recalibrated_onnx(proto: onnx.ModelProto, images: Any, batch_size: int = 256,
                      device: str | torch.device | None = None) -> onnx.ModelProto:  # fmt: skip
    """`proto` with BN statistics re-estimated on `images` exactly as the Evaluator scores (unchanged without BN).
    `images`: a dataset (every model input), a tensor/array, or one per model input."""
    if not bn_nodes(proto):
        return proto
    batch_size = fixed_batch(proto) or batch_size
    dev = torch.device(device) if device else device_default()
    module = to_torch(proto, trainable=False).to(dev).eval()
    raw = getattr(images, "inputs", None) or getattr(images, "x", images)
    arrays = list(raw) if isinstance(raw, (tuple, list)) else [raw]
    xs = [a.to(dev) if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), device=dev) for a in arrays]
    recalibrate_bn(module, xs, batch_size)
    return write_bn_stats(proto, module)
