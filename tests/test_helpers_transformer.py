"""The TinyViT fixtures export faithfully, and the pruned-network oracle (tests/helpers_transformer.py) is right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.transformers import TINY_VARIANTS, export, tiny_vit
from tests.helpers_onnx import run
from tests.helpers_transformer import (
    Keep,
    keep_all,
    masked_forward,
    random_keep,
    reference_logits,
    slice_vit,
)

VARIANTS = sorted(TINY_VARIANTS)
# exports take seconds each: a few (variant, opset) pairs by default, the whole matrix under -m slow
FAST_EXPORTS = {("tinyvit_fused_pre_cls", 14), ("tinyvit_sep_post_mean", 17), ("tinyvit_chunk_pre_cls", 17)}
EXPORTS = [pytest.param(n, o, marks=[] if (n, o) in FAST_EXPORTS else [pytest.mark.slow])
           for n in VARIANTS for o in (14, 17)]


def _x(batch: int = 3, seed: int = 5) -> np.ndarray:
    """A seeded float32 input batch [B, 1, 28, 28]."""
    return np.random.default_rng(seed).normal(size=(batch, 1, 28, 28)).astype(np.float32)


def _torch(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits of a torch module on a numpy batch."""
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", VARIANTS)
def test_keep_everything_is_the_original_exactly(name: str) -> None:
    """Slicing with every index kept reproduces the original bit for bit."""
    model = tiny_vit(**TINY_VARIANTS[name])
    x = _x()
    assert np.array_equal(reference_logits(model, keep_all(model), x), _torch(model, x))


@pytest.mark.parametrize("name", VARIANTS)
def test_masked_forward_reproduces_torch(name: str) -> None:
    """The numpy cross-check, keeping everything, computes what the torch module computes."""
    model = tiny_vit(**TINY_VARIANTS[name])
    x = _x()
    np.testing.assert_allclose(masked_forward(model, keep_all(model), x), _torch(model, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_sliced_network_equals_ln_over_kept_channels(name: str, seed: int) -> None:
    """Embedding dim, heads and MLP units removed: the sliced network equals the full-width computation with
    removed channels zeroed and every LayerNorm normalising over the kept channels only."""
    model = tiny_vit(**TINY_VARIANTS[name])
    keep = random_keep(model, np.random.default_rng(seed), embed=0.6, heads=0.67, mlp=0.5)
    assert len(keep.embed) < model.cfg.dim
    x = _x()
    got = reference_logits(model, keep, x)
    np.testing.assert_allclose(got, masked_forward(model, keep, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_plain_masking_is_not_the_oracle_for_the_stream(name: str) -> None:
    """With the embedding dim pruned, masking (LN statistics over the zeroed channels too) differs from the
    pruned network; with only heads and MLP units pruned, masking and slicing agree."""
    model = tiny_vit(**TINY_VARIANTS[name])
    x = _x()
    stream = random_keep(model, np.random.default_rng(3), embed=0.5, heads=1.0, mlp=1.0)
    gap = np.abs(reference_logits(model, stream, x) - masked_forward(model, stream, x, ln_over_kept=False)).max()
    assert gap > 1e-3
    inner = random_keep(model, np.random.default_rng(4), embed=1.0, heads=0.67, mlp=0.5)
    assert inner.embed == tuple(range(model.cfg.dim))
    np.testing.assert_allclose(reference_logits(model, inner, x),
                               masked_forward(model, inner, x, ln_over_kept=False), atol=1e-4, rtol=0)


def test_sliced_shapes_and_scale() -> None:
    """The sliced model is physically smaller where the plan says, and keeps the softmax scale of head_dim."""
    model = tiny_vit(qkv="fused", heads=(3, 3), mlp_hidden=(96, 64))
    keep = Keep(embed=tuple(range(0, 48, 2)), heads=((0, 2), (1,)), mlp=(tuple(range(40)), (5, 7, 9)))
    small = slice_vit(model, keep)
    assert small.cfg.dim == 24 and small.cfg.heads == (2, 1) and small.cfg.mlp_hidden == (40, 3)
    assert small.blocks[0].attn.qkv.weight.shape == (3 * 2 * 16, 24)
    assert small.blocks[1].attn.proj.weight.shape == (24, 16)
    assert small.blocks[1].fc2.weight.shape == (24, 3)
    assert small.pos_embed.shape == (1, 50, 24) and small.head.weight.shape == (10, 24)
    assert small.blocks[0].attn.scale == model.blocks[0].attn.scale == 16**-0.5
    # head 2's k rows in the fused weight are rows 48 + 32..47 of the original
    got = small.blocks[0].attn.qkv.weight[2 * 16 + 16 : 2 * 16 + 32]
    want = model.blocks[0].attn.qkv.weight[48 + 32 : 48 + 48][:, list(keep.embed)]
    assert torch.equal(got, want)


@pytest.mark.parametrize("bad", [
    Keep(embed=(), heads=((0,), (0,)), mlp=((0,), (0,))),
    Keep(embed=(1, 0), heads=((0,), (0,)), mlp=((0,), (0,))),
    Keep(embed=(0,), heads=((3,), (0,)), mlp=((0,), (0,))),
    Keep(embed=(0,), heads=((0,),), mlp=((0,), (0,))),
])
def test_bad_keep_is_refused(bad: Keep) -> None:
    """Empty, unsorted, out-of-range or wrongly-sized plans are errors, not silent garbage."""
    with pytest.raises(ValueError):
        slice_vit(tiny_vit(), bad)


@pytest.mark.parametrize(("name", "opset"), EXPORTS)
def test_fixture_and_sliced_export_match_torch(tmp_path: Path, name: str, opset: int) -> None:
    """Each TinyViT variant, and a sliced copy, exports to ONNX that ONNX Runtime runs to the torch logits
    (dynamic batch): the form a pruned file written by the tool is compared in."""
    model = tiny_vit(**TINY_VARIANTS[name])
    keep = random_keep(model, np.random.default_rng(7))
    x = _x(batch=2)
    for tag, m in (("orig", model), ("sliced", slice_vit(model, keep))):
        path = export(m, (1, 28, 28), tmp_path / f"{tag}.onnx", opset=opset).path
        (out,) = run(path, {"input": x})
        np.testing.assert_allclose(out, _torch(m, x), atol=1e-4, rtol=0)
