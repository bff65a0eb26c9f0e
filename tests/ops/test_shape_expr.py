"""Shape vectors built at run time (agmc_onnx/ops/shape_expr.py) and the rules that read them: a Reshape
target or Resize sizes made of Shape(x)[k] and constants, in a file with dynamic input sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from agmc_onnx.ops.reshape import ShapeChannel
from agmc_onnx.ops.shape_expr import entries, runtime_shape
from agmc_onnx.ops.unary import ResizeSizes
from agmc_onnx.plan import Plan
from agmc_onnx.surgery import prune
from tests.helpers_onnx import check_oracles
from tests.ops.helpers import const, conv, dynamic, group_of, runtime_reshape_head, weight

TWO_SIZES = [{"x": (1, 3, 8, 8)}, {"x": (1, 3, 12, 20)}]


def _propagator(a: object) -> object:
    """A fresh propagator over an analysed model (entries only read shapes, constants and producers)."""
    from agmc_onnx.groups import Propagator

    return Propagator(a.model)  # type: ignore[attr-defined]


def test_entries_say_where_each_entry_comes_from() -> None:
    """Concat(Unsqueeze(Gather(Shape(r), 0)), [8], [-1]): a dim of r, then two constants."""
    _, a = dynamic(*runtime_reshape_head(), {"out": ["N", 4]})
    p = _propagator(a)
    got = entries(p, "target")
    assert got is not None and [e.value for e in got] == ["N", 8, -1]
    assert got[0].dim == ("r", 0) and got[1].const == ("chans", 0) and got[2].const == ("minus1", 0)
    rt = runtime_shape(p, "target", "N")
    assert rt is not None and rt.values == [0, 8, -1]  # the batch entry reads as Reshape's 0 (copy)
    assert runtime_shape(p, "target", "M") is None  # a batch entry that is not the input's batch


def test_runtime_reshape_target_is_rewritten_in_its_constant_and_stays_size_agnostic(tmp_path: Path) -> None:
    """YOLO's head: the Reshape's target is built at run time; its channel entry is the constant `chans`, which
    the rewrite sets to the kept width. The written file keeps x[N, 3, H, W] and runs at any size."""
    model, a = dynamic(*runtime_reshape_head(), {"out": ["N", 4]})
    g = group_of(a, "c1")
    assert g.prunable and g.size == 8
    assert a.hooks == [("flat", ShapeChannel("f", "chans", 0))]
    path = tmp_path / "head.onnx"
    onnx.save(model, str(path))
    plan = Plan({g.id: [1, 4, 6]})
    check_oracles(path, plan, a, sizes=TWO_SIZES)
    out = prune(a, plan)
    assert numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == "chans")).tolist() == [3]
    assert [d.dim_param or d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]


def test_runtime_target_whose_channel_entry_is_a_shape_dim_follows_by_itself(tmp_path: Path) -> None:
    """x.view(x.size(0), x.size(1), -1): the channel entry is Shape(r)[1], which follows the pruned width, so no
    rewrite is needed (as written; normalising folds Shape(r)[1] into a constant, which is rewritten)."""
    nodes, inits = runtime_reshape_head()
    nodes.insert(5, helper.make_node("Gather", ["s", "one"], ["c"], name="gather_c", axis=0))
    nodes.insert(6, helper.make_node("Unsqueeze", ["c", "axes0"], ["cu"], name="unsq_c"))
    concat = next(n for n in nodes if n.op_type == "Concat")
    concat.input[1] = "cu"
    inits = [t for t in inits if t.name != "chans"] + [const("one", 1, np.int64)]
    path = tmp_path / "view.onnx"
    for normalise, hooks in ((False, []), (True, [("flat", ShapeChannel("f", "cu", 0))])):
        model, a = dynamic(nodes, inits, {"out": ["N", 4]}, normalise=normalise)
        g = group_of(a, "c1")
        assert g.prunable and a.hooks == hooks
        onnx.save(model, str(path))
        check_oracles(path, Plan({g.id: [0, 2, 3, 7]}), a, sizes=TWO_SIZES)


def test_resize_sizes_built_at_run_time(tmp_path: Path) -> None:
    """torchvision's segmentation heads: Resize(a, sizes=Concat(Shape(a)[0:2], [16, 16])); the channel entry
    is Shape(a)[1] (it follows), so the channels stay prunable (they froze before: 'sizes computed at run time')."""
    nodes = [
        conv("x", "w1", "a", "c1"),
        helper.make_node("Shape", ["a"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "starts", "ends", "axes"], ["nc"], name="slice"),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], name="concat", axis=0),
        helper.make_node("Resize", ["a", "", "", "sizes"], ["up"], name="resize", mode="nearest"),
        conv("up", "w2", "out", "c2"),
    ]
    inits = [weight("w1", 8, 3, 1, 1), weight("w2", 2, 8, 1, 1, seed=1), const("starts", [0], np.int64),
             const("ends", [2], np.int64), const("axes", [0], np.int64), const("hw", [16, 16], np.int64)]
    model, a = dynamic(nodes, inits, {"out": ["N", 2, 16, 16]})
    g = group_of(a, "c1")
    assert g.prunable and not [r for _, r in a.hooks if isinstance(r, ResizeSizes)]
    path = tmp_path / "resize.onnx"
    onnx.save(model, str(path))
    check_oracles(path, Plan({g.id: [1, 2, 5]}), a, sizes=TWO_SIZES)
