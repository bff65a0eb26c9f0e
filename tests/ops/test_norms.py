"""ops/norms.py: LayerNorm over the channel axis and reductions over it are statistics of the channels; the
pruned network normalises over the kept channels (surgery.mask writes that network at full width)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from agmc_onnx.analysis import Analysis
from agmc_onnx.plan import Plan
from agmc_onnx.surgery import mask, prune
from tests.conftest import check_plan, feeds, run
from tests.helpers_onnx import mask_consumers
from tests.ops.helpers import const, conv, group_of, half, positive, tiny, weight

TO_LAST = helper.make_node("Transpose", ["a"], ["t"], name="to_last", perm=[0, 2, 3, 1])


def _head(x: str) -> list[onnx.NodeProto]:
    """A Linear reading the normalised channels: the stream's consumer."""
    return [helper.make_node("MatMul", [x, "w2"], ["out"], name="fc")]


def _net(norm: list[onnx.NodeProto], out: str, opset: int, extra: list[onnx.TensorProto]) -> Analysis:
    """conv(8) -> channels last -> `norm` (writing `out`) -> Linear(8 -> 4)."""
    return tiny([conv("x", "w1", "a", "c1"), TO_LAST, *norm, *_head(out)],
                [weight("w1", 8, 3, 1, 1), weight("w2", 8, 4, seed=1), *extra], {"out": ["N", 6, 6, 4]},
                opset=opset)  # fmt: skip


def _layernorm() -> Analysis:
    """The LayerNormalization op (opset 17) over the last, channel, axis."""
    ln = helper.make_node("LayerNormalization", ["t", "g", "b"], ["n"], name="ln", axis=-1, epsilon=1e-5)
    return _net([ln], "n", 17, [positive("g", 8), weight("b", 8, seed=2)])


def _decomposed(rms: bool = False, keepdims: int = 1, op: str = "ReduceMean") -> Analysis:
    """LayerNorm as older exporters write it (mean, centred, variance, sqrt, divide), or RMSNorm (rms)."""
    red = lambda i, o: helper.make_node(op, [i], [o], name=f"red_{o}", axes=[-1], keepdims=keepdims)  # noqa: E731
    nodes = [] if rms else [red("t", "mu"), helper.make_node("Sub", ["t", "mu"], ["d"], name="sub")]
    src = "t" if rms else "d"
    nodes += [
        helper.make_node("Pow", [src, "two"], ["sq"], name="pow"), red("sq", "var"),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="addeps"), helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
        helper.make_node("Div", [src, "sd"], ["nd"], name="div"), helper.make_node("Mul", ["nd", "g"], ["ng"], name="scale"),
        helper.make_node("Add", ["ng", "b"], ["n"], name="shift"),
    ]  # fmt: skip
    return _net(nodes, "n", 13, [const("two", 2.0), const("eps", 1e-5), positive("g", 8), weight("b", 8, seed=2)])


@pytest.mark.parametrize("build", [_layernorm, _decomposed, lambda: _decomposed(rms=True)],
                         ids=["layernorm", "decomposed", "rmsnorm"])
def test_statistic_over_the_channels_keeps_them_prunable(build) -> None:  # type: ignore[no-untyped-def]
    """The stream through a LayerNorm (op or decomposed) is one prunable group: the norm's scale and bias are
    its members, the normalising nodes its statistics; pruned == masked with statistics over kept channels."""
    a = build()
    g = group_of(a, "c1")
    assert g.prunable and g.stats, (g.frozen_reason, g.stats)
    assert {(m.tensor, m.role) for m in g.members} >= {("g", "norm"), ("b", "norm"), ("w2", "consumer")}
    check_plan(a, half(a))
    pruned = prune(a, half(a))
    x = feeds(a.model.proto)
    np.testing.assert_allclose(run(pruned, x)[0], run(mask_consumers(a, half(a)), x)[0], atol=1e-4, rtol=0)


def test_masking_alone_is_not_the_pruned_network() -> None:
    """Zeroing the consumers' removed rows leaves the removed channels in the LayerNorm's statistics: that
    network differs from the pruned one; the engine's mask, which rewrites the statistic, does not."""
    a = _layernorm()
    plan = Plan({group_of(a, "c1").id: [0, 2, 3, 5]})
    x = feeds(a.model.proto)
    pruned = run(prune(a, plan), x)[0]
    np.testing.assert_allclose(pruned, run(mask(a, plan), x)[0], atol=1e-4, rtol=0)
    assert not any(n.op_type == "ReduceSum" for n in mask(a, Plan({})).graph.node)  # nothing removed: as is
    # consumers zeroed but the LayerNorm left alone: not the pruned network
    proto = onnx.ModelProto()
    proto.CopyFrom(a.model.proto)
    w = {t.name: t for t in proto.graph.initializer}["w2"]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[[1, 4, 6, 7]] = 0
    w.CopyFrom(onnx.numpy_helper.from_array(arr, "w2"))
    assert np.abs(run(proto, x)[0] - pruned).max() > 1e-3


@pytest.mark.parametrize(("kind", "reason"), [("keepdims0", "channel axis"), ("max", "channel axis")])
def test_other_reductions_over_the_channels_still_freeze(kind: str, reason: str) -> None:
    """A reduction over the channels that is not a statistic with kept dims (keepdims=0, a max) freezes them."""
    a = _decomposed(keepdims=0) if kind == "keepdims0" else _decomposed(op="ReduceMax")
    g = group_of(a, "c1")
    assert not g.prunable and reason in str(g.frozen_reason)


def test_layernorm_over_channels_and_other_axes_freezes() -> None:
    """LayerNorm from an axis before the channel axis (GroupNorm-like) freezes, with the reason."""
    ln = helper.make_node("LayerNormalization", ["t", "g"], ["n"], name="ln", axis=2)
    a = _net([ln], "n", 17, [positive("g", 6, 8)])
    g = group_of(a, "c1")
    assert not g.prunable and "channel axis and other axes" in str(g.frozen_reason)
