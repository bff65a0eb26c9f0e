"""Builders for the per-family op tests: tiny onnx.helper graphs around one op, and torch nets exported
and analysed with the oracles of tests.helpers_onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from agmc_onnx.analysis import Analysis, analyze
from agmc_onnx.groups import ChannelGroup
from agmc_onnx.model import from_proto, load
from agmc_onnx.plan import Plan, plan_from_ratios
from tests.conftest import export, helper_model, random_plan
from tests.helpers_onnx import check_oracles


def const(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    """An initializer holding `value`."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    """A random float initializer."""
    return const(name, np.random.default_rng(seed).standard_normal(shape))


def positive(name: str, *shape: int) -> onnx.TensorProto:
    """A random initializer in [0.5, 1.5] (variances, scales)."""
    return const(name, np.random.default_rng(7).uniform(0.5, 1.5, shape))


def tiny(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], outputs: dict[str, list[Any]],
         x: tuple[Any, ...] = ("N", 3, 6, 6), opset: int = 13, types: dict[str, int] | None = None) -> Analysis:  # fmt: skip
    """Analysis of a hand-built graph reading float input `x` and writing the named outputs (dims given;
    float unless `types` names another element type)."""
    types = types or {}
    model = helper_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))],
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), d) for n, d in outputs.items()],
        inits, opset=opset,
    )  # fmt: skip
    return analyze(from_proto(model))


def dynamic(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], outputs: dict[str, list[Any]],
            size: tuple[int, ...] = (1, 3, 8, 8), opset: int = 13,
            normalise: bool = True) -> tuple[onnx.ModelProto, Analysis]:  # fmt: skip
    """A hand-built graph reading x[N, 3, H, W] (dynamic sizes, as Ultralytics and Paddle write them), and its
    analysis at input size `size` (`normalise`: through onnxslim as `load` does, else as written)."""
    model = helper_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in outputs.items()], inits, opset=opset,
    )  # fmt: skip
    return model, analyze(from_proto(model, normalise_graph=normalise, input_shapes={"x": size}))


def runtime_reshape_head(channels: int = 8) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """YOLO's detect-head idiom: a = Conv(x); f = Reshape(a, Concat(Shape(a)[0], [C], [-1])) -> [N, C, H*W];
    mean over the H*W axis, then a Linear: the channel entry of the run-time target is a constant."""
    nodes = [
        conv("x", "w1", "a", "c1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["b"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["b", "axes0"], ["bu"], name="unsq"),
        helper.make_node("Concat", ["bu", "chans", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="flat"),
        helper.make_node("ReduceMean", ["f"], ["m"], name="mean", axes=[2], keepdims=0),
        helper.make_node("Gemm", ["m", "fc"], ["out"], name="fc", transB=1),
    ]
    inits = [weight("w1", channels, 3, 3, 3), const("zero", 0, np.int64), const("axes0", [0], np.int64),
             const("chans", [channels], np.int64), const("minus1", [-1], np.int64), weight("fc", 4, channels, seed=1)]
    return nodes, inits


def conv(x: str, w: str, out: str, name: str, **attrs: Any) -> onnx.NodeProto:
    """A Conv node (no bias)."""
    return helper.make_node("Conv", [x, w], [out], name=name, **attrs)


def group_of(a: Analysis, producer: str) -> ChannelGroup:
    """The group whose producers include node `producer`."""
    return next(g for g in a.groups if producer in g.producers)


def half(a: Analysis) -> Plan:
    """Keep half of every prunable group (channels by L1, any count)."""
    return plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)


def analyse_torch(module: nn.Module, tmp_path: Path, opset: int = 13, size: int = 16) -> tuple[Path, Analysis]:
    """Export a torch net (3 x size x size input, random weights, BN folded) and analyse it."""
    import torch

    torch.manual_seed(0)
    path = export(module, (3, size, size), tmp_path / "net.onnx", keep_bn=False, opset=opset)
    return path, analyze(load(path))


def all_oracles(path: Path, a: Analysis) -> None:
    """Oracles 1-3 for a random plan and an L1 plan at ratio 0.5 (keep-all is checked inside)."""
    assert a.prunable_groups(), "nothing prunable"
    check_oracles(path, random_plan(a, seed=1))
    check_oracles(path, half(a))
