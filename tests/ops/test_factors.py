"""ops/atoms.py, ops/factors.py, ops/regroup.py: factored channel layouts (channels over several axes), their
canonical form, the factored Reshape and its surgery rewrite."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import helper, numpy_helper

from agmc_onnx.ops.atoms import ONE, Atom, Layout, Mono, Plain, canonical
from agmc_onnx.ops.regroup import ReshapeFactors, factor_counts
from agmc_onnx.plan import Plan
from agmc_onnx.surgery import prune
from tests.conftest import check_plan, feeds, run
from tests.ops.helpers import const, conv, group_of, tiny, weight


def m(v: int, e: int = 0) -> Mono:
    """A monomial size."""
    return Mono(Fraction(v), e)


def test_monomials() -> None:
    """Sizes multiply and divide; a batch-proportional size is valid with a fractional coefficient only."""
    u = m(1, 1)
    assert (u * m(16)) / m(16) == u and (u / m(16)).valid and not (m(3) / m(2)).valid
    assert m(48).static == 48 and u.static is None and ONE.one and not (u / u * m(2)).one


def test_canonical_plain_and_factored() -> None:
    """Channels on one axis next to static atoms become a plain id list (repeated like Flatten); channels on
    two axes stay factored, in memory order; factors along which ids do not vary become opaque."""
    ids = np.arange(6).reshape(2, 3)
    # [B, 2*3] merged on one axis: the plain list in memory order
    merged = canonical(Layout(ids, ((Atom(m(1, 1)),), (Atom(m(2), 0), Atom(m(3), 1)))))
    assert isinstance(merged, Plain) and merged.axis == 1 and merged.ids == list(range(6))
    # [B, 3, 2] with the factors transposed: factor order follows memory order
    moved = canonical(Layout(ids, ((Atom(m(1, 1)),), (Atom(m(3), 1),), (Atom(m(2), 0),))))
    assert isinstance(moved, Layout) and moved.ids.tolist() == ids.T.tolist()
    assert [[a.factor for a in ax] for ax in moved.axes] == [[-1], [0], [1]]
    # a static atom between the batch and the channels on one axis: ids repeat over it
    rep = canonical(Layout(np.arange(3), ((Atom(m(1, 1)),), (Atom(m(2)), Atom(m(3), 0)))))
    assert isinstance(rep, Plain) and rep.ids == [0, 1, 2, 0, 1, 2]
    # heads merged into the batch axis stay factored (the batch is run-time)
    mha = canonical(Layout(ids, ((Atom(m(1, 1)), Atom(m(2), 0)), (Atom(m(3), 1),))))
    assert isinstance(mha, Layout)
    # a factor whose ids repeat (the same channel at every token) is not a channel factor
    flat = canonical(Layout(np.tile(np.arange(3), (4, 1)), ((Atom(m(4), 0),), (Atom(m(3), 1),))))
    assert isinstance(flat, Plain) and flat.axis == 1 and flat.ids == [0, 1, 2]


def test_factor_counts_need_whole_units() -> None:
    """Kept counts per factor of a product set; anything else (a head cut through) is refused."""
    keep = np.zeros((3, 2, 4), dtype=bool)
    keep[:, 1, :] = True
    assert factor_counts(keep.reshape(-1), (3, 2, 4), "t") == [3, 1, 4]
    keep[0, 1, 0] = False
    with pytest.raises(ValueError, match="whole units"):
        factor_counts(keep.reshape(-1), (3, 2, 4), "t")


def _heads_net(target: list[int], perm: list[int], merge: list[int]) -> object:
    """conv(8) -> [N, 36, 8] tokens -> Reshape(target: heads split out) -> Transpose(perm) -> Relu ->
    Transpose back -> Reshape(merge) -> Linear(8 -> 4)."""
    nodes = [conv("x", "w1", "a", "c1"), helper.make_node("Reshape", ["a", "s0"], ["f"], name="flat"),
             helper.make_node("Transpose", ["f"], ["tok"], name="tok", perm=[0, 2, 1]),
             helper.make_node("Reshape", ["tok", "s1"], ["h"], name="split_heads"),
             helper.make_node("Transpose", ["h"], ["ht"], name="heads_first", perm=perm),
             helper.make_node("Relu", ["ht"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["rb"], name="heads_back", perm=[int(np.argsort(perm)[k]) for k in range(len(perm))]),
             helper.make_node("Reshape", ["rb", "s2"], ["mg"], name="merge_heads"),
             helper.make_node("MatMul", ["mg", "w2"], ["out"], name="fc")]  # fmt: skip
    inits = [weight("w1", 8, 3, 1, 1), const("s0", [0, 8, -1], np.int64), const("s1", target, np.int64),
             const("s2", merge, np.int64), weight("w2", 8, 4, seed=1)]  # fmt: skip
    return tiny(nodes, inits, {"out": ["N", 36, 4]})


def test_heads_split_and_merged_back_keep_the_plain_channels() -> None:
    """Splitting the channel axis into (2 heads, 4) and moving the heads next to the batch does not change
    which channels exist: the conv's 8 channels stay one prunable group; surgery rewrites both targets."""
    a = _heads_net([0, 36, 2, 4], [0, 2, 1, 3], [0, 36, 8])
    g = group_of(a, "c1")
    assert g.prunable and g.size == 8
    hooks = {n: type(r).__name__ for n, r in a.hooks}
    assert hooks["split_heads"] == "ReshapeFactors" and hooks["merge_heads"] == "ShapeChannel"
    # whole "heads" (channels 4..7) go: the split target's heads entry becomes 1
    plan = Plan({g.id: [4, 5, 6, 7]})
    out = prune(a, plan)
    s1 = next(n for n in out.graph.node if n.name == "split_heads").input[1]
    assert {t.name: numpy_helper.to_array(t).tolist() for t in out.graph.initializer}[s1] == [0, 36, 1, 4]
    check_plan(a, plan)
    run(out, feeds(a.model.proto, batch=3))  # the written reshape runs at another batch size


def test_heads_cut_through_is_refused_at_surgery() -> None:
    """A plan that keeps part of one (2 x 4) unit and all of the other cannot be reshaped: surgery says so."""
    from agmc_onnx.errors import AgmcError

    a = _heads_net([0, 36, 2, 4], [0, 2, 1, 3], [0, 36, 8])
    with pytest.raises(AgmcError, match="whole units"):
        prune(a, Plan({group_of(a, "c1").id: [0, 4, 5, 6, 7]}))


def test_heads_merged_into_the_batch_and_back() -> None:
    """[N, 36, 8] -> [N*36*2, 4]: one channel factor shares an axis with the run-time batch (-1), the other
    has its own; the Relu between keeps the factored layout and the merge back restores the channels."""
    a = _heads_net([-1, 4], [0, 1], [-1, 36, 8])
    g = group_of(a, "c1")
    assert g.prunable and g.size == 8, g.frozen_reason
    check_plan(a, Plan({g.id: [4, 5, 6, 7]}))


def test_reshape_factors_record_writes_kept_counts() -> None:
    """ReshapeFactors rewrites each listed entry to old / sizes * kept counts."""

    class S:
        opset = 17
        values = {"shape": np.array([-1, 50, 3, 3, 16], dtype=np.int64)}

        def keep_mask(self, tensor: str) -> np.ndarray:
            keep = np.zeros((3, 3, 16), dtype=bool)
            keep[:, [0, 2], :] = True
            return keep.reshape(-1)

        def const(self, name: str) -> np.ndarray:
            return self.values[name]

        def set_const(self, name: str, value: np.ndarray) -> None:
            self.values[name] = value

    s = S()
    ReshapeFactors("t", "shape", (3, 3, 16), ((2, (0,)), (3, (1,)), (4, (2,)))).apply(s, None)  # type: ignore[arg-type]
    assert s.values["shape"].tolist() == [-1, 50, 3, 2, 16]
