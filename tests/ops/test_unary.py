"""Single-activation rules (agmc_onnx/ops/unary.py): activations, pools, Pad, Resize, Softmax, reductions."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx.analysis import Analysis
from agmc_onnx.ops.unary import ResizeSizes
from agmc_onnx.plan import Plan
from tests.conftest import check_plan
from tests.ops.helpers import const, conv, group_of, half, tiny, weight


def _between(op_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], width: int = 8, opset: int = 13,
             out_hw: int = 6) -> Analysis:  # fmt: skip
    """c1 (3 -> 8 channels, output 'a') -> the given nodes (ending in 'y') -> c2 (width -> 4) -> 'out'."""
    return tiny([conv("x", "w1", "a", "c1"), *op_nodes, conv("y", "w2", "out", "c2")],
                [weight("w1", 8, 3, 1, 1), weight("w2", 4, width, 1, 1, seed=1), *inits],
                {"out": ["N", 4, out_hw, out_hw]}, opset=opset)  # fmt: skip


def test_activations_pass_channels_through() -> None:
    """Activations, Clip with constant bounds and Dropout keep c1's channels in line: c1 stays prunable."""
    a = _between([helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
                  helper.make_node("LeakyRelu", ["s"], ["l"], name="leaky", alpha=0.1),
                  helper.make_node("Clip", ["l", "lo", "hi"], ["c"], name="clip"),
                  helper.make_node("Dropout", ["c"], ["y"], name="drop")],
                 [const("lo", 0.1), const("hi", 0.8)])  # fmt: skip
    assert group_of(a, "c1").prunable and group_of(a, "c1").size == 8
    check_plan(a, half(a))


def test_maxpool_with_used_indices_freezes() -> None:
    """MaxPool's Indices output encodes channel positions: when it is used, c1's channels stay."""
    pool = helper.make_node("MaxPool", ["a"], ["y", "idx"], name="pool", kernel_shape=[2, 2], strides=[2, 2])
    a = tiny([conv("x", "w1", "a", "c1"), pool, conv("y", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 4, 8, 1, 1, seed=1)],
             {"out": ["N", 4, 3, 3], "idx": ["N", 8, 3, 3]}, types={"idx": TensorProto.INT64})  # fmt: skip
    g = group_of(a, "c1")
    assert not g.prunable and "indices" in str(g.frozen_reason)


def test_pad_of_spatial_axes_passes_of_channels_freezes() -> None:
    """Pad of H and W passes channels through; padding the channel axis freezes them."""
    spatial = _between([helper.make_node("Pad", ["a", "p"], ["y"], name="pad")],
                       [const("p", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)], out_hw=8)  # fmt: skip
    assert group_of(spatial, "c1").prunable
    check_plan(spatial, half(spatial))
    channels = _between([helper.make_node("Pad", ["a", "p"], ["y"], name="pad")],
                        [const("p", [0, 1, 0, 0, 0, 1, 0, 0], np.int64)], width=10)  # fmt: skip
    g = group_of(channels, "c1")
    assert not g.prunable and "Pad on the channel axis" in str(g.frozen_reason)


def test_softmax_over_width_passes_over_channels_freezes() -> None:
    """Softmax (opset 13) over the last axis passes channels; over axis 1 it mixes them, so it freezes."""
    last = _between([helper.make_node("Softmax", ["a"], ["y"], name="sm", axis=-1)], [])
    assert group_of(last, "c1").prunable
    check_plan(last, half(last))
    chan = _between([helper.make_node("Softmax", ["a"], ["y"], name="sm", axis=1)], [])
    assert "Softmax" in str(group_of(chan, "c1").frozen_reason)


def test_reduce_without_keepdims_moves_the_axis() -> None:
    """ReduceMean over H, W without keepdims leaves [N, C]: the Gemm after it consumes c1's channels on
    B's axis 1; a reduction over the channel axis freezes."""
    def net(axes: list[int]) -> Analysis:
        """c1 -> ReduceMean(axes, keepdims=0) -> Flatten -> Gemm."""
        return tiny([conv("x", "w1", "a", "c1"), helper.make_node("ReduceMean", ["a"], ["m"], name="mean", axes=axes, keepdims=0),
                     helper.make_node("Flatten", ["m"], ["f"], name="flat"),
                     helper.make_node("Gemm", ["f", "B"], ["out"], name="fc", transB=1)],
                    [weight("w1", 8, 3, 1, 1), weight("B", 4, 8 if axes == [2, 3] else 36, seed=1)],
                    {"out": ["N", 4]})  # fmt: skip

    a = net([2, 3])
    assert a.channel_axis("m") == 1
    assert {(m.tensor, m.axis, m.role) for m in group_of(a, "c1").members if m.role == "consumer"} == {("B", 1, "consumer")}
    check_plan(a, half(a))
    g = group_of(net([1]), "c1")
    assert not g.prunable and "over the channel axis" in str(g.frozen_reason)


def test_resize_sizes_channel_entry_rewritten() -> None:
    """Resize with constant sizes: a ResizeSizes record writes the kept width into sizes[1]."""
    rs = helper.make_node("Resize", ["a", "", "", "sizes"], ["y"], name="rs", mode="nearest")
    a = tiny([conv("x", "w1", "a", "c1"), rs, conv("y", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 4, 8, 1, 1, seed=1), const("sizes", [2, 8, 12, 12], np.int64)],
             {"out": [2, 4, 12, 12]}, x=(2, 3, 6, 6))  # fmt: skip
    assert a.hooks == [("rs", ResizeSizes("a", "sizes"))]
    out = check_plan(a, Plan({group_of(a, "c1").id: [1, 4, 6]}))
    sizes = next(t for t in out.graph.initializer if t.name == "sizes")
    assert numpy_helper.to_array(sizes).tolist() == [2, 3, 12, 12]


def test_image_scaler_is_a_per_channel_affine_map() -> None:
    """ImageScaler (old zoo files, opset < 10): channels pass through and its per-channel bias attribute is cut
    with them (inception_v2-style files were 'nothing prunable' without a rule)."""
    from agmc_onnx.ops.unary import ImageScalerBias

    bias = [0.1 * k for k in range(8)]
    sc = helper.make_node("ImageScaler", ["a"], ["s"], name="scale", scale=0.5, bias=bias)
    a = tiny([conv("x", "w1", "a", "c1"), sc, conv("s", "w2", "out", "c2")],
             [weight("w1", 8, 3, 1, 1), weight("w2", 4, 8, 1, 1, seed=1)], {"out": ["N", 4, 6, 6]}, opset=9)  # fmt: skip
    g = group_of(a, "c1")
    assert g.prunable and a.hooks == [("scale", ImageScalerBias("a"))]
    out = check_plan(a, Plan({g.id: [1, 4, 6]}))
    node = next(n for n in out.graph.node if n.op_type == "ImageScaler")
    got = next(x for x in node.attribute if x.name == "bias").floats
    assert np.allclose(list(got), [bias[1], bias[4], bias[6]])
