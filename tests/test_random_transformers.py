"""Property tests (12 derandomized examples by default, 60 with -m slow): random small transformers (TinyViT
configurations: pre- or post-norm, fused / chunked / separate qkv, class token or mean pooling, explicit
attention or scaled_dot_product_attention, 1-3 heads per block, opset 14 or 17) pruned at random plans equal
the network with those channels removed (tests/helpers_transformer.py) and hold oracles 1-3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agmc_onnx.analysis import analyze
from agmc_onnx.model import load
from agmc_onnx.plan import Plan
from agmc_onnx.surgery import prune
from fixtures.transformers import QKV_KINDS, export, tiny_vit
from tests.helpers_onnx import check_oracles, run
from tests.helpers_transformer import Keep, keep_all, reference_logits


@st.composite
def configs(draw: st.DrawFn) -> dict:
    """A random small TinyViT configuration (ViTConfig overrides) and an export opset."""
    depth = draw(st.integers(1, 2))
    return {
        "overrides": {
            "dim": draw(st.sampled_from((16, 24))),
            "head_dim": draw(st.sampled_from((4, 8))),
            "heads": tuple(draw(st.integers(1, 3)) for _ in range(depth)),
            "mlp_hidden": tuple(draw(st.sampled_from((8, 20, 32))) for _ in range(depth)),
            "qkv": draw(st.sampled_from(QKV_KINDS)),
            "pre_norm": draw(st.booleans()),
            "cls_token": draw(st.booleans()),
            "sdpa": draw(st.booleans()),
        },
        "opset": draw(st.sampled_from((14, 17))),
        "seed": draw(st.integers(0, 2**16)),
    }


def _check(tmp: Path, cfg: dict) -> None:
    """Export, analyse, prune at a random plan; compare with the pruned-network oracle and hold oracles 1-3."""
    model = tiny_vit(seed=cfg["seed"] % 7, **cfg["overrides"])
    path = export(model, (1, 28, 28), tmp / "m.onnx", opset=cfg["opset"]).path
    a = analyze(load(path))
    assert [g.size for g in a.groups if not g.prunable] == [10], [(g.size, g.frozen_reason) for g in a.groups]
    rng = np.random.default_rng(cfg["seed"])
    c = model.cfg
    by_producer = {p: g for g in a.groups for p in g.producers}
    pick = lambda n: sorted(int(i) for i in rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False))  # noqa: E731
    stream = by_producer["/patch_embed/Conv"]
    kept = {stream.id: pick(stream.size)}
    heads, mlp = [], []
    for b in range(c.depth):
        attn = {g.id: g for p, g in by_producer.items() if p.startswith(f"/blocks.{b}/attn/") and g.id != stream.id}
        if c.heads[b] > 1:  # whole heads: one group, one channel per head
            assert [g.size for g in attn.values()] == [c.heads[b]], [(g.size, g.producers) for g in attn.values()]
            (hg,) = attn.values()
            kept[hg.id] = pick(hg.size)
            heads.append(tuple(kept[hg.id]))
        else:  # one head: its features are the channels (q with k; v with the out-projection), kept whole here
            assert all(g.prunable for g in attn.values())
            heads.append((0,))
        mg = by_producer[f"/blocks.{b}/fc1/MatMul"]
        kept[mg.id] = pick(mg.size)
        mlp.append(tuple(kept[mg.id]))
    plan = Plan(kept)
    x = rng.normal(size=(2, 1, 28, 28)).astype(np.float32)
    got = run(prune(a, plan), {"input": x})[0]
    want = reference_logits(model, Keep(tuple(kept[stream.id]), tuple(heads), tuple(mlp)), x)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(reference_logits(model, keep_all(model), x), run(path, {"input": x})[0], atol=1e-5)
    check_oracles(path, plan, a)


SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


@settings(max_examples=12, **SETTINGS)
@given(cfg=configs())
def test_random_transformer_blocks(tmp_path_factory: pytest.TempPathFactory, cfg: dict) -> None:
    """Random transformer blocks: pruned == the network with those channels removed; oracles 1-3."""
    _check(tmp_path_factory.mktemp("rt"), cfg)


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(cfg=configs())
def test_random_transformer_blocks_many(tmp_path_factory: pytest.TempPathFactory, cfg: dict) -> None:
    """The same property over more configurations (slow run)."""
    _check(tmp_path_factory.mktemp("rt"), cfg)
