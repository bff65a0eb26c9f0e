"""Issue 15 end to end on transformer exports: the residual stream through LayerNorm, whole attention heads and
MLP widths pruned together, checked against the pruned-network oracle (tests/helpers_transformer.py: the
original with those channels REMOVED, every LayerNorm over the kept ones) and oracles 1-3; torchvision's
ViT, Swin, MaxViT and ConvNeXt (small configurations here, real sizes under -m slow), timm's DeiT where timm
is installed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agmc_onnx.analysis import Analysis, analyze
from agmc_onnx.model import load
from agmc_onnx.plan import Plan, full_plan, plan_from_ratios
from agmc_onnx.surgery import prune
from fixtures.transformers import FIXTURES, TINY_VARIANTS, export, export_fixture, tiny_vit
from tests.conftest import random_plan
from tests.helpers_onnx import check_oracles, run
from tests.helpers_transformer import Keep, keep_all, reference_logits

FAST = {("tinyvit_fused_pre_cls", 17), ("tinyvit_sep_post_mean", 14), ("tinyvit_chunk_pre_cls", 17),
        ("tinyvit_sdpa_pre_cls", 17)}  # fmt: skip
CASES = [pytest.param(n, o, marks=[] if (n, o) in FAST else [pytest.mark.slow]) for n in sorted(TINY_VARIANTS)
         for o in (14, 17)]  # fmt: skip


def _x(batch: int = 3, seed: int = 5) -> np.ndarray:
    """A seeded input batch [B, 1, 28, 28]."""
    return np.random.default_rng(seed).normal(size=(batch, 1, 28, 28)).astype(np.float32)


def _group(a: Analysis, producer: str, heads: bool = False) -> Any:
    """The group one of whose producers is named `producer` (or contains it, for heads)."""
    for g in a.groups:
        if heads and g.class_width > 1 and any(producer in p for p in g.producers):
            return g
        if not heads and producer in g.producers:
            return g
    raise LookupError(producer)


def _plan_and_keep(a: Analysis, model: Any, rng: np.random.Generator) -> tuple[Plan, Keep]:
    """A random plan over the stream, every block's heads and MLP units, and the same plan as a Keep."""
    cfg = model.cfg
    pick = lambda n, k: sorted(int(i) for i in rng.choice(n, size=k, replace=False))  # noqa: E731
    stream = _group(a, "/patch_embed/Conv")
    kept = {stream.id: pick(cfg.dim, 28)}
    heads, mlp = [], []
    for b in range(cfg.depth):
        hg = _group(a, f"/blocks.{b}/attn/", heads=True)
        mg = _group(a, f"/blocks.{b}/fc1/MatMul")
        assert hg.size == cfg.heads[b] and hg.class_width in (cfg.head_dim, 3 * cfg.head_dim)
        kept[hg.id] = pick(hg.size, 2)
        kept[mg.id] = pick(mg.size, 40)
        heads.append(tuple(kept[hg.id]))
        mlp.append(tuple(kept[mg.id]))
    return Plan(kept), Keep(tuple(kept[stream.id]), tuple(heads), tuple(mlp))


@pytest.mark.parametrize(("name", "opset"), CASES)
def test_tinyvit_stream_heads_and_mlp_match_the_pruned_network(tmp_path: Path, name: str, opset: int) -> None:
    """Every TinyViT variant: nothing frozen but the logits; the stream, 2 of 3 heads per block and 40 of 96
    MLP units pruned == the physically smaller network (max abs diff <= 1e-4), far from the original;
    keep-everything reproduces the original exactly; oracles 1-3 hold."""
    model = tiny_vit(**TINY_VARIANTS[name])
    path = export(model, (1, 28, 28), tmp_path / "m.onnx", opset=opset).path
    a = analyze(load(path))
    assert [g.size for g in a.groups if not g.prunable] == [10], [(g.size, g.frozen_reason) for g in a.groups]
    assert _group(a, "/patch_embed/Conv").stats
    x = _x()
    original = run(path, {"input": x})[0]
    np.testing.assert_array_equal(run(prune(a, full_plan(a)), {"input": x})[0], original)
    np.testing.assert_allclose(reference_logits(model, keep_all(model), x), original, atol=1e-5, rtol=0)
    plan, keep = _plan_and_keep(a, model, np.random.default_rng(0))
    got = run(prune(a, plan), {"input": x})[0]
    np.testing.assert_allclose(got, reference_logits(model, keep, x), atol=1e-4, rtol=0)
    assert np.abs(got - original).max() > 1e-2
    check_oracles(path, plan, a)


SMALL = ["tv_vit_small", "tv_swin_small", "tv_maxvit_small", "tv_convnext_small"]


@pytest.mark.parametrize("opset", [17, pytest.param(14, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", SMALL)
def test_torchvision_small_transformers(tmp_path: Path, name: str, opset: int) -> None:
    """Small torchvision ViT / Swin / MaxViT / ConvNeXt: every group but the logits prunable (the stream
    through every LayerNorm, heads incl. Swin's and MaxViT's relative position bias tables, MLPs) and the
    oracles hold at a random and a uniform plan."""
    path = export_fixture(name, tmp_path, opset=opset).path
    a = analyze(load(path))
    frozen = [(g.size, g.frozen_reason) for g in a.groups if not g.prunable]
    assert frozen == [(10, "graph output logits")], frozen
    assert not a.untracked()
    heads = [g for g in a.prunable_groups() if g.class_width > 1]
    assert bool(heads) == (name != "tv_convnext_small")
    if name in ("tv_swin_small", "tv_maxvit_small"):  # every block's relative position bias, sliced per head
        tables = [m for g in heads for m in g.members if m.role == "norm" and a.model.inits[m.tensor].ndim == 4]
        assert len(tables) == len(heads) and all(a.model.inits[m.tensor].shape[m.axis] == g.size
                                                 for g in heads for m in g.members if m in tables)
    for plan in (random_plan(a, seed=1), plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)):
        check_oracles(path, plan, a)


def test_evaluator_never_masks_a_stream(tmp_path: Path) -> None:
    """Scoring a model whose stream goes through LayerNorms: mask mode is refused, auto picks a mode that
    removes channels, and the score is the pruned file's accuracy."""
    from agmc_onnx.errors import AgmcError
    from agmc_onnx.evaluate import Evaluator, evaluate_onnx

    path = export_fixture("tv_convnext_small", tmp_path, opset=17).path
    a = analyze(load(path))
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x=rng.normal(size=(48, 3, 32, 32)).astype(np.float32), y=rng.integers(0, 10, 48))
    with pytest.raises(AgmcError, match="mask mode"):
        Evaluator(a, data, mode="mask")
    ev = Evaluator(a, data, batch_size=16)
    assert ev.mode in ("slice", "prune")
    plan = plan_from_ratios(a, {g.id: 0.5 for g in a.prunable_groups()}, round_to=1)
    assert ev.score(plan) == evaluate_onnx(prune(a, plan), data)


LARGE = ["vit_b_32", "swin_t", "maxvit_t", "convnext_tiny", "deit_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_real_size_models_mostly_prunable(tmp_path: Path, name: str) -> None:
    """Real-size torchvision models and timm's DeiT-tiny: at most 5% of the channels frozen besides the graph
    outputs (channels of weighted layers in no group counted as frozen), and a uniform 0.5 MACs target met
    within 2%; the pruned file runs at batch 2 and counts what the cost model predicted."""
    from agmc_onnx.budget import Budget
    from agmc_onnx.cost import count_macs
    from agmc_onnx.strategies.base import StrategyContext
    from agmc_onnx.strategies.uniform import Uniform
    from agmc_onnx.workflows.audit import summarize

    for pkg in FIXTURES[name].needs:
        pytest.importorskip(pkg, reason=f"{name} needs {pkg} (not in the test extra)")
    path = export_fixture(name, tmp_path, opset=17).path
    a = analyze(load(path))
    info = summarize(a)
    assert info["frozen_share"] <= 0.05, (info["frozen_share"], [g for g in info["group_table"] if not g["prunable"]])
    plan = Uniform().propose(StrategyContext(analysis=a, budget=Budget(flops=0.5), round_to="auto:16"))
    pruned = prune(a, plan)
    assert abs(count_macs(pruned) / a.cost.total_macs - 0.5) <= 0.02
    assert count_macs(pruned) == a.cost.plan_macs(plan)
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    assert np.isfinite(run(pruned, {"input": x})[0]).all()


def test_vit_fixture_contract() -> None:
    """fixtures/models/vit_tiny.onnx: under 1 MB, the file its training record names, scoring the recorded
    accuracy in ONNX Runtime on the shipped test subset (within 1 point), nothing frozen but the logits."""
    import hashlib
    import json

    from agmc_onnx.data import fashion_mnist_dir, load_dataset
    from agmc_onnx.evaluate import evaluate_onnx

    models = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    path, record = models / "vit_tiny.onnx", json.loads((models / "vit_tiny.json").read_text())
    assert path.stat().st_size < 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    acc = evaluate_onnx(path, load_dataset(fashion_mnist_dir(), "test", num_classes=10))
    assert abs(acc - record["test_accuracy_onnx"]) <= 0.01
    a = analyze(load(path))
    assert [(g.size, g.frozen_reason) for g in a.groups if not g.prunable] == [(10, "graph output logits")]
    assert sorted(g.size for g in a.prunable_groups() if g.class_width > 1) == [4, 4, 4]
