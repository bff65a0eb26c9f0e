"""Ops on one activation that keep its channels where they are: activations, pools, Pad, Resize, Softmax,
reductions over other axes, Shape/Size (no channels flow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from agmc_onnx.ops import factors
from agmc_onnx.ops.common import attrs, const_or_attr, inp, rank, tracked
from agmc_onnx.ops.context import Propagation, Surgery
from agmc_onnx.ops.norms import reduce_statistic
from agmc_onnx.ops.registry import Unsupported, rule
from agmc_onnx.ops.shape_expr import entries

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@rule(
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Gelu",
    "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Erf", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Cast", "Clip", "Dropout", "Shrink",
    "IsNaN", "IsInf", "Not", "CastLike", "Swish", any_axis=True, layout_aware=True,
)
def passthrough(p: Propagation, node: onnx.NodeProto) -> None:
    """Element-wise on one activation: every output carries the input's channel ids on the same axis."""
    if p.layout(node.input[0]) is not None:
        if any(i and p.ids(i) is not None for i in node.input[1:]):
            raise Unsupported("second activation input")
        factors.copy(p, node)
        return
    ids = tracked(p, node.input[0])
    for i in node.input[1:]:
        if i and p.ids(i) is not None:
            raise Unsupported(f"second activation input {i!r}")
    for o in node.output:
        if o:
            p.set(o, ids, p.axis(node.input[0]))


@rule("AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def pool(p: Propagation, node: onnx.NodeProto) -> None:
    """Pools over the axes after axis 1 (NCHW only): channels pass through."""
    ids = tracked(p, node.input[0])
    p.set(node.output[0], ids)


@rule("MaxPool")
def maxpool(p: Propagation, node: onnx.NodeProto) -> None:
    """MaxPool passes channels through; a used Indices output encodes channel positions, so freeze."""
    if len(node.output) > 1 and node.output[1] and p.has_consumers(node.output[1]):
        raise Unsupported("MaxPool indices output is used")
    p.set(node.output[0], tracked(p, node.input[0]))


@rule("Shape", "Size", any_axis=True, split_aware=True, layout_aware=True)
def shape_of(p: Propagation, node: onnx.NodeProto) -> None:
    """Shape/Size read only the shape, which is computed at run time: no channels flow, wherever they sit."""


@rule("Softmax", "LogSoftmax", "Hardmax", any_axis=True, layout_aware=True)
def softmax(p: Propagation, node: onnx.NodeProto) -> None:
    """Softmax over a spatial axis passes channels through; over channels (or flattened) it freezes."""
    if p.layout(node.input[0]) is not None and p.opset >= 13:
        factors.copy(p, node, not_axis=int(attrs(node).get("axis", -1)))
        return
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    if r is None:
        raise Unsupported("unknown rank")
    default = -1 if p.opset >= 13 else 1
    axis = int(attrs(node).get("axis", default)) % r
    if axis == 0 or (axis == t if p.opset >= 13 else axis <= t):
        raise Unsupported(f"{node.op_type} over the channel axis")
    p.set(node.output[0], ids, t)


@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", any_axis=True)
def reduce(p: Propagation, node: onnx.NodeProto) -> None:
    """Reductions over spatial axes pass channels through; a mean/sum/norm over the channel axis alone with
    keepdims=1 is a statistic of the channels (ops/norms.py); other reductions over batch or channels freeze."""
    if reduce_statistic(p, node):
        return
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    axes = const_or_attr(p, node, 1, "axes")
    if r is None or not axes:
        raise Unsupported(f"{node.op_type} over all axes")
    axes = [a % r for a in axes]
    if 0 in axes or t in axes:
        raise Unsupported(f"{node.op_type} over the channel axis")
    keepdims = int(attrs(node).get("keepdims", 1))
    p.set(node.output[0], ids, t if keepdims else t - sum(a < t for a in set(axes)))


@rule("Pad", any_axis=True)
def pad(p: Propagation, node: onnx.NodeProto) -> None:
    """Pad without padding the batch or channel axes passes channels through."""
    ids = tracked(p, node.input[0])
    t = p.axis(node.input[0])
    r = rank(p, node.input[0])
    pads = const_or_attr(p, node, 1, "pads")
    if r is None or pads is None:
        raise Unsupported("Pad with unknown pads")
    axes = const_or_attr(p, node, 3, "axes") if len(node.input) > 3 and node.input[3] else list(range(r))
    n = len(axes or [])
    for k, a in enumerate(axes or []):
        if a % r in (0, t) and (pads[k] != 0 or pads[k + n] != 0):
            raise Unsupported("Pad on the channel axis")
    p.set(node.output[0], ids, t)


@dataclass(frozen=True)
class ResizeSizes:
    """Resize with a constant `sizes`: its channel entry becomes the kept width of `tensor` (`index`: where
    that entry sits in the constant; a run-time `sizes` is a Concat whose constant part may hold it)."""

    tensor: str
    sizes: str
    index: int = 1

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Write the kept width into entry `index` of `sizes`."""
        sizes = s.const(self.sizes).copy()
        sizes.reshape(-1)[self.index] = s.new_len(self.tensor)
        s.set_const(self.sizes, sizes)


@rule("Resize", "Upsample")
def resize(p: Propagation, node: onnx.NodeProto) -> None:
    """Resize of spatial axes passes channels through; a constant `sizes` gets its channel entry rewritten."""
    ids = tracked(p, node.input[0])
    if node.op_type == "Upsample" and "scales" in attrs(node):
        scales = [float(s) for s in attrs(node)["scales"]]
    else:
        sidx = 1 if node.op_type == "Upsample" or p.opset < 11 else 2
        scales_name = inp(node, sidx)
        sizes_name = inp(node, 3) if node.op_type == "Resize" and p.opset >= 11 else ""
        if scales_name and p.const(scales_name) is not None and p.const(scales_name).size > 0:
            scales = [float(s) for s in p.const(scales_name).reshape(-1)]
        elif sizes_name:
            sizes = p.const(sizes_name)
            if sizes is None:
                _runtime_sizes(p, node, ids, sizes_name)
                p.set(node.output[0], ids)
                return
            if "axes" in attrs(node):
                raise Unsupported("Resize with axes")
            if int(sizes.reshape(-1)[1]) != len(ids):
                raise Unsupported("Resize changes the channel count")
            p.hook(node, ResizeSizes(node.input[0], sizes_name))
            p.set(node.output[0], ids)
            return
        else:
            raise Unsupported("Resize scales computed at run time")
    if "axes" in attrs(node):
        raise Unsupported("Resize with axes")
    if len(scales) < 2 or scales[0] != 1.0 or scales[1] != 1.0:
        raise Unsupported("Resize scales the batch or channel axis")
    p.set(node.output[0], ids)


def _runtime_sizes(p: Propagation, node: onnx.NodeProto, ids: list[int], sizes: str) -> None:
    """Resize `sizes` built at run time (Concat of Shape(x)[0:2] and the target H, W): its channel entry must
    be Shape of a tensor carrying these channels (it follows the pruned width) or a constant (rewritten)."""
    items = entries(p, sizes)
    if items is None or len(items) < 2 or "axes" in attrs(node):
        raise Unsupported("Resize sizes computed at run time")
    batch, chan = items[0], items[1]
    if not (batch.dim is not None and batch.dim[1] == 0) and batch.value != 1:
        raise Unsupported("Resize sizes computed at run time scale the batch axis")
    if chan.dim is not None and p.ids(chan.dim[0]) == ids and p.axis(chan.dim[0]) == chan.dim[1] == 1:
        return
    if chan.const is not None and chan.value == len(ids):
        p.hook(node, ResizeSizes(node.input[0], chan.const[0], chan.const[1]))
        return
    raise Unsupported("Resize changes the channel count")


@dataclass(frozen=True)
class ImageScalerBias:
    """ImageScaler's per-channel `bias` attribute: only the kept channels' entries stay."""

    tensor: str

    def apply(self, s: Surgery, node: gs.Node) -> None:
        """Keep the kept channels' bias values."""
        keep = s.keep_mask(self.tensor)
        node.attrs["bias"] = [float(b) for b, k in zip(node.attrs["bias"], keep, strict=True) if k]


@rule("ImageScaler")
def image_scaler(p: Propagation, node: onnx.NodeProto) -> None:
    """ImageScaler (an experimental op of ONNX 1.2 the old zoo files use): y = scale * x + bias[c], a
    per-channel affine map from attributes; channels pass through, the bias is cut with them."""
    ids = tracked(p, node.input[0])
    bias = attrs(node).get("bias")
    if bias is not None:
        if len(bias) != len(ids):
            raise Unsupported("ImageScaler bias does not match the channels")
        p.hook(node, ImageScalerBias(node.input[0]))
    p.set(node.output[0], ids)
