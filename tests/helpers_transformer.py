"""Reference oracle for pruning a TinyViT (issue 15): the physically smaller network, built by slicing weights.

LayerNorm over the residual stream is not "masking": removing embedding channels changes every LN's mean
and variance. The honest reference is the original network with those channels REMOVED, i.e. the network
whose embedding dim is physically smaller. `slice_vit` builds it from the original's weights:
- residual stream (`Keep.embed`): patch-embedding conv rows, class token and position embedding columns,
  every LayerNorm's weight and bias, the columns of every Linear reading the stream (q/k/v or qkv, fc1,
  head) and the rows of every Linear writing it (attention out-projection, fc2);
- attention heads (`Keep.heads`, per block, whole heads): q, k and v rows of each kept head (for a fused
  qkv Linear, the three head_dim-row blocks of the head in the q, k and v thirds) and the out-projection
  columns; head_dim, hence the softmax scale head_dim**-0.5, is unchanged;
- MLP hidden units (`Keep.mlp`, per block): fc1 rows and fc2 columns.
`masked_forward` computes the same thing a second, independent way (numpy, full width, removed channels
zeroed and each LayerNorm's statistics taken over the kept channels only), so the oracle is itself checked.
A pruned ONNX written by the tool must match `reference_logits` with max abs diff <= 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from fixtures.transformers import TinyViT


@dataclass(frozen=True)
class Keep:
    """Kept channel indices (sorted, within the original): embedding dim, heads and MLP units per block."""

    embed: tuple[int, ...]
    heads: tuple[tuple[int, ...], ...]
    mlp: tuple[tuple[int, ...], ...]


def keep_all(model: TinyViT) -> Keep:
    """The plan that keeps everything."""
    cfg = model.cfg
    return Keep(tuple(range(cfg.dim)), tuple(tuple(range(h)) for h in cfg.heads),
                tuple(tuple(range(m)) for m in cfg.mlp_hidden))


def random_keep(model: TinyViT, rng: np.random.Generator, embed: float = 0.5, heads: float = 0.5,
                mlp: float = 0.5) -> Keep:
    """A random plan keeping about these fractions of each axis (at least one channel / head each)."""
    cfg = model.cfg

    def pick(n: int, frac: float) -> tuple[int, ...]:
        k = max(1, min(n, int(round(frac * n))))
        return tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False)))

    return Keep(pick(cfg.dim, embed), tuple(pick(h, heads) for h in cfg.heads),
                tuple(pick(m, mlp) for m in cfg.mlp_hidden))


def _check(model: TinyViT, keep: Keep) -> None:
    """Keep indices must be sorted, unique, in range and non-empty, one entry per block."""
    cfg = model.cfg
    axes = [(keep.embed, cfg.dim, "embed")]
    if len(keep.heads) != cfg.depth or len(keep.mlp) != cfg.depth:
        raise ValueError("Keep needs one heads and one mlp entry per block")
    axes += [(h, n, f"heads[{b}]") for b, (h, n) in enumerate(zip(keep.heads, cfg.heads, strict=True))]
    axes += [(m, n, f"mlp[{b}]") for b, (m, n) in enumerate(zip(keep.mlp, cfg.mlp_hidden, strict=True))]
    for idx, n, name in axes:
        if not idx or list(idx) != sorted(set(idx)) or idx[0] < 0 or idx[-1] >= n:
            raise ValueError(f"{name}: kept indices must be sorted, unique, non-empty and below {n}: {idx}")


def head_rows(heads: Sequence[int], head_dim: int) -> list[int]:
    """Rows (of q, k or v; columns of the out-projection) that belong to the given heads."""
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def qkv_rows(heads: Sequence[int], n_heads: int, head_dim: int) -> list[int]:
    """Rows of a fused qkv weight [3*H*d, dim] that belong to the given heads (q, then k, then v third)."""
    rows = head_rows(heads, head_dim)
    return [s * n_heads * head_dim + r for s in range(3) for r in rows]


def _take(t: torch.Tensor, axis: int, idx: Sequence[int]) -> torch.Tensor:
    """t indexed by idx along axis (a copy)."""
    return t.index_select(axis, torch.as_tensor(list(idx), dtype=torch.long)).clone()


def slice_vit(model: TinyViT, keep: Keep) -> TinyViT:
    """The physically smaller TinyViT: the original's weights sliced to the kept channels (see module doc)."""
    _check(model, keep)
    cfg = model.cfg
    new_cfg = replace(cfg, dim=len(keep.embed), heads=tuple(len(h) for h in keep.heads),
                      mlp_hidden=tuple(len(m) for m in keep.mlp))
    small = TinyViT(new_cfg).eval()
    e = keep.embed
    src = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    out["patch_embed.weight"] = _take(src["patch_embed.weight"], 0, e)
    out["patch_embed.bias"] = _take(src["patch_embed.bias"], 0, e)
    if cfg.cls_token:
        out["cls_token"] = _take(src["cls_token"], 2, e)
    out["pos_embed"] = _take(src["pos_embed"], 2, e)
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        for ln in ("norm1", "norm2"):
            out[p + ln + ".weight"] = _take(src[p + ln + ".weight"], 0, e)
            out[p + ln + ".bias"] = _take(src[p + ln + ".bias"], 0, e)
        rows = head_rows(keep.heads[b], cfg.head_dim)
        if cfg.qkv == "separate":
            for name in ("q", "k", "v"):
                out[p + f"attn.{name}.weight"] = _take(_take(src[p + f"attn.{name}.weight"], 0, rows), 1, e)
                out[p + f"attn.{name}.bias"] = _take(src[p + f"attn.{name}.bias"], 0, rows)
        else:
            fused = qkv_rows(keep.heads[b], cfg.heads[b], cfg.head_dim)
            out[p + "attn.qkv.weight"] = _take(_take(src[p + "attn.qkv.weight"], 0, fused), 1, e)
            out[p + "attn.qkv.bias"] = _take(src[p + "attn.qkv.bias"], 0, fused)
        out[p + "attn.proj.weight"] = _take(_take(src[p + "attn.proj.weight"], 0, e), 1, rows)
        out[p + "attn.proj.bias"] = _take(src[p + "attn.proj.bias"], 0, e)
        m = keep.mlp[b]
        out[p + "fc1.weight"] = _take(_take(src[p + "fc1.weight"], 0, m), 1, e)
        out[p + "fc1.bias"] = _take(src[p + "fc1.bias"], 0, m)
        out[p + "fc2.weight"] = _take(_take(src[p + "fc2.weight"], 0, e), 1, m)
        out[p + "fc2.bias"] = _take(src[p + "fc2.bias"], 0, e)
    if cfg.pre_norm:
        out["norm.weight"] = _take(src["norm.weight"], 0, e)
        out["norm.bias"] = _take(src["norm.bias"], 0, e)
    out["head.weight"] = _take(src["head.weight"], 1, e)
    out["head.bias"] = src["head.bias"].clone()
    small.load_state_dict(out, strict=True)
    return small


def reference_logits(model: TinyViT, keep: Keep, x: np.ndarray) -> np.ndarray:
    """Logits of the pruned network (`slice_vit`) on a float32 batch [B, C, H, W]: what a pruned ONNX must give."""
    small = slice_vit(model, keep)
    with torch.no_grad():
        return small(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


# ------------------------------------------------------------------------------------------------------
# An independent second computation: full width, numpy, removed channels zeroed, LN over kept channels.


def _np(t: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy (the check runs in double precision)."""
    return t.detach().numpy().astype(np.float64)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, kept: np.ndarray, eps: float,
                over_kept: bool) -> np.ndarray:
    """LayerNorm of x[..., dim]; statistics over the kept channels only (`over_kept`) or over all of them
    (plain masking, which is NOT the pruned network); removed channels of the output are zero."""
    sel = x[..., kept] if over_kept else x
    mu = sel.mean(-1, keepdims=True)
    var = ((sel - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w + b
    mask = np.zeros(x.shape[-1])
    mask[kept] = 1.0
    return y * mask


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as torch's default."""
    return 0.5 * x * (1.0 + torch.erf(torch.from_numpy(x / np.sqrt(2.0))).numpy())


def masked_forward(model: TinyViT, keep: Keep, x: np.ndarray, ln_over_kept: bool = True) -> np.ndarray:
    """Logits of the ORIGINAL weights at full width with removed stream channels, heads and MLP units zeroed.
    With `ln_over_kept` every LayerNorm normalises over the kept stream channels only, which equals the
    pruned network; without it this is plain masking (LN statistics include the zeroed channels)."""
    _check(model, keep)
    cfg = model.cfg
    sd = {k: _np(v) for k, v in model.state_dict().items()}
    kept = np.array(keep.embed)
    emask = np.zeros(cfg.dim)
    emask[kept] = 1.0
    xin = x.astype(np.float64)
    b, _, hh, ww = xin.shape
    p = cfg.patch
    patches = xin.reshape(b, cfg.in_channels, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, (hh // p) * (ww // p), -1)  # [B, N, C*p*p] row-major like the conv weight
    t = patches @ sd["patch_embed.weight"].reshape(cfg.dim, -1).T + sd["patch_embed.bias"]
    if cfg.cls_token:
        t = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, cfg.dim)), t], axis=1)
    t = (t + sd["pos_embed"]) * emask

    def ln(name: str, v: np.ndarray) -> np.ndarray:
        return _layer_norm(v, sd[name + ".weight"], sd[name + ".bias"], kept, cfg.eps, ln_over_kept)

    def linear(name: str, v: np.ndarray) -> np.ndarray:
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    for blk in range(cfg.depth):
        pre = f"blocks.{blk}."
        n_heads, d = cfg.heads[blk], cfg.head_dim

        def attn(v: np.ndarray, pre: str = pre, n_heads: int = n_heads, d: int = d, blk: int = blk) -> np.ndarray:
            if cfg.qkv == "separate":
                q, k, vv = (linear(pre + f"attn.{s}", v) for s in ("q", "k", "v"))
            else:
                q, k, vv = np.split(linear(pre + "attn.qkv", v), 3, axis=-1)
            q, k, vv = (z.reshape(b, -1, n_heads, d).transpose(0, 2, 1, 3) for z in (q, k, vv))
            s = q @ k.transpose(0, 1, 3, 2) * d**-0.5
            s = np.exp(s - s.max(-1, keepdims=True))
            o = (s / s.sum(-1, keepdims=True)) @ vv  # [B, H, N, d]
            hmask = np.zeros(n_heads)
            hmask[list(keep.heads[blk])] = 1.0
            o = (o * hmask[None, :, None, None]).transpose(0, 2, 1, 3).reshape(b, -1, n_heads * d)
            return linear(pre + "attn.proj", o) * emask

        def mlp(v: np.ndarray, pre: str = pre, blk: int = blk) -> np.ndarray:
            hmask = np.zeros(cfg.mlp_hidden[blk])
            hmask[list(keep.mlp[blk])] = 1.0
            return linear(pre + "fc2", _gelu(linear(pre + "fc1", v)) * hmask) * emask

        if cfg.pre_norm:
            t = t + attn(ln(pre + "norm1", t))
            t = t + mlp(ln(pre + "norm2", t))
        else:
            t = ln(pre + "norm1", t + attn(t))
            t = ln(pre + "norm2", t + mlp(t))
    if cfg.pre_norm:
        t = ln("norm", t)
    pooled = t[:, 0] if cfg.cls_token else t.mean(axis=1)
    return linear("head", pooled)
