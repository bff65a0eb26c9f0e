"""agmc_onnx.fidelity: each form scores identical outputs 1, independent outputs about 0, and falls as the
error grows; kinds are told from the original's outputs; weights and batching do not change the sums."""

from __future__ import annotations

import pytest
import torch

from agmc_onnx.fidelity import Fidelity, output_kind

G = torch.Generator().manual_seed(0)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def _outputs() -> dict[str, torch.Tensor]:
    """One synthetic output of every kind, with the scale of a trained model's."""
    logits = 4 * randn(2000, 10)
    emb = randn(2000, 32)
    return {
        "logits": logits,
        "probs": torch.softmax(logits, 1),
        "embedding": emb / emb.norm(dim=1, keepdim=True),
        "dense": torch.cat([300 * torch.rand(2000, 4, 50, generator=G),   # boxes in pixels
                            torch.sigmoid(randn(2000, 6, 50))], 1),       # scores in [0, 1]
    }


def _noisy(kind: str, ref: torch.Tensor, level: float) -> torch.Tensor:
    """`ref` with error `level` (0: identical), kept in the output's kind."""
    if kind == "probs":
        return torch.softmax(torch.log(ref) + level * 4 * randn(*ref.shape), 1)
    if kind == "embedding":
        out = ref + level * randn(*ref.shape) / ref.shape[1] ** 0.5
        return out / out.norm(dim=1, keepdim=True)
    scale = ref.std(dim=tuple(d for d in range(ref.dim()) if d != 1), keepdim=True)
    return ref + level * scale * randn(*ref.shape)


def _independent(kind: str, ref: torch.Tensor) -> torch.Tensor:
    """An output of the same kind and distribution that ignores the original's (rows shuffled: unrelated)."""
    return ref[torch.randperm(len(ref), generator=G)]


@pytest.mark.parametrize("kind", ["logits", "probs", "embedding", "dense"])
def test_identical_independent_monotone(kind: str) -> None:
    ref = _outputs()[kind]
    f = Fidelity([ref], [kind])
    assert f.specs[0].kind == kind  # told from the values
    assert f.score([ref.clone()]) == pytest.approx(1.0, abs=1e-6)
    assert f.score([_independent(kind, ref)]) < 0.15
    scores = [f.score([_noisy(kind, ref, level)]) for level in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_kinds_weights_and_batches() -> None:
    outs = _outputs()
    names = list(outs)
    refs = [outs[n] for n in names]
    cand = [_noisy(n, outs[n], 0.5) for n in names]
    f = Fidelity(refs, names)
    whole = f.score(cand)
    tally = f.start()
    for lo in range(0, 2000, 300):  # batch by batch: the same figure
        tally.add(lo, [c[lo:lo + 300] for c in cand])
    assert tally.value() == pytest.approx(whole, abs=1e-5)
    per = tally.per_output()
    assert whole == pytest.approx(sum(per.values()) / 4, abs=1e-5)
    only_dense = Fidelity(refs, names, weights={"logits": 0, "probs": 0, "embedding": 0})
    assert only_dense.score(cand) == pytest.approx(per["dense"], abs=1e-5)
    as_dense = Fidelity(refs[:1], names[:1], kinds={"logits": "dense"})
    assert as_dense.specs[0].kind == "dense"
    with pytest.raises(ValueError, match="unknown output name"):
        Fidelity(refs, names, weights={"boxes": 1.0})
    with pytest.raises(ValueError, match="kind must be one of"):
        Fidelity(refs, names, kinds={"logits": "boxes"})
    with pytest.raises(ValueError, match="candidate shape"):
        f.score([c[:, :1] for c in cand])


def test_output_kind() -> None:
    assert output_kind(randn(5, 3, 8, 8)) == "dense"
    assert output_kind(randn(5, 1)) == "dense"
    assert output_kind(randn(5, 10)) == "logits"
    assert output_kind(torch.softmax(randn(5, 10), 1)) == "probs"
    v = randn(5, 16)
    assert output_kind(v / v.norm(dim=1, keepdim=True)) == "embedding"


def test_small_channels_count_beside_large_ones() -> None:
    """A YOLO-like output [N, 4 + 80, anchors]: box channels in pixels (variance ~1e4) beside class scores of
    variance ~1e-8. A candidate with the boxes right and the class scores of other images scores low (each
    channel counts the same); a channel constant in the original is floored, not divided by zero."""
    boxes = 300 * torch.rand(64, 4, 100, generator=G)
    scores = 1e-4 * torch.rand(64, 80, 100, generator=G)
    ref = torch.cat([boxes, scores], 1)
    wrong = torch.cat([boxes, scores[torch.randperm(64, generator=G)]], 1)
    f = Fidelity([ref])
    assert f.score([ref.clone()]) == pytest.approx(1.0, abs=1e-6)
    assert f.score([wrong]) < 0.1
    ref[:, 5] = 0.0  # a dead channel
    near = ref + 1e-9 * torch.randn(ref.shape, generator=G)
    assert Fidelity([ref]).score([near]) > 0.99


def test_outputs_that_do_not_depend_on_the_input_are_named() -> None:
    """A random net whose activations vanished: the same output for every input (up to 1e-7) is named with its
    spread; outputs that follow the input are not."""
    anchors = torch.arange(100.0).repeat(64, 4, 1)  # varies over positions, not over examples
    flat = anchors + 1e-7 * randn(64, 4, 100)
    live = 4 * randn(64, 10)
    got = Fidelity([flat, live], ["boxes", "logits"]).insensitive()
    assert list(got) == ["boxes"] and got["boxes"] < 1e-6
    assert Fidelity([randn(64, 4, 100)]).insensitive() == {}
