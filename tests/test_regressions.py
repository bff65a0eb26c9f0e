"""Regression tests for engine bugs the verification suite found (each fixed; the test stays).

1. count_macs counted every symbolic dim as 1, not only the batch: after Reshape(-1, C) of [N, S, C] the
   Gemm counted 1 x C x K instead of S x C x K at batch 1 (vit_b_32: 407,027,712 vs 435,339,264 from the
   shapes ONNX Runtime produces). Fixed in c7f9d77.
2. A plan could empty one side of a channel Split/Slice, leaving a Conv with a zero-size weight
   [C, 0, k, k] that count_macs counted as if the zero were 1. Fixed in ffd3780.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers_onnx import check_oracles, export_torch, reference_macs


def _reshape_gemm() -> object:
    """input[N,5,8] -> Reshape(-1, 8) -> Gemm(8->4) -> out[5N, 4]."""
    w = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"], name="reshape"),
            helper.make_node("Gemm", ["flat", "w"], ["out"], name="fc", transB=1),
        ],
        "reshape_gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 5, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])],
        [w, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_count_macs_symbolic_rows() -> None:
    """At batch 1 the Gemm has 5 rows: 5 * 8 * 4 = 160 MACs."""
    from agmc_onnx.cost import count_macs

    model = _reshape_gemm()
    assert reference_macs(model) == 160
    assert count_macs(model) == 160


def test_split_side_never_emptied(tmp_path: Path) -> None:
    """Keeping only the pass-through half of a split is refused, and planned keeps leave no zero-size tensor."""
    from agmc_onnx.analysis import analyze
    from agmc_onnx.errors import InputError
    from agmc_onnx.model import load
    from agmc_onnx.plan import Plan, plan_from_ratios
    from agmc_onnx.surgery import prune
    from tests.test_random_graphs import Block, RandomNet, Spec, randomize

    spec = Spec(stem=4, blocks=(Block("split", 2, "relu", False, k=1), Block("conv", 4, "relu", False)), head="gap")
    path = export_torch(randomize(RandomNet(spec), 0), (3, 12, 12), tmp_path / "split.onnx", fold=False)
    analysis = analyze(load(path))
    with pytest.raises(InputError, match="empty"):
        prune(analysis, Plan(kept={0: [0, 1]}))
    for ratio in (0.25, 0.5, 0.75):
        plan = plan_from_ratios(analysis, {g.id: ratio for g in analysis.groups if g.prunable}, round_to=1)
        pruned = prune(analysis, plan)
        assert all(0 not in t.dims for t in pruned.graph.initializer)
        check_oracles(path, plan, analysis)
