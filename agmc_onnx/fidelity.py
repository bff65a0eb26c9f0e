"""Fidelity: how closely a candidate reproduces the original model's outputs, as a number in [0, 1] that the
search uses like accuracy (the reward without labels) and reports quote beside it.

Every graph output is scored by its kind (told from the original's outputs, or given), then the scores are
averaged with per-output weights (equal by default):

- ``logits`` ([N, C] class scores): ``0.5 * top-1 agreement + 0.5 * exp(-KL(p_orig || p_cand))`` with
  softmax at temperature 1. Agreement is what accuracy would see; the KL term is continuous, so plans that
  flip no top-1 decision are still told apart.
- ``probs`` ([N, C], rows >= 0 summing to 1): the same on the probabilities as given.
- ``embedding`` ([N, D] rows of unit L2 norm): mean cosine similarity, clipped at 0.
- ``dense`` (anything else: boxes, score maps, features): ``exp(-2 NMSE)``. NMSE is the mean squared error
  per channel (axis 1, over examples and positions) divided by that channel's variance in the original's
  outputs, averaged over channels, so every channel counts the same whatever its units (box pixels or
  sigmoid scores). An unrelated output of the same distribution has NMSE 2, hence fidelity e^-4 = 0.02;
  the form never reaches 0, so badly damaged candidates (an untrained net's, NMSE > 2) still rank, where
  ``1 - NMSE`` saturated at 0 for plans a search visits.

Identical outputs score 1; outputs independent of the original's score about 0 (agreement is at chance,
1/C, and the KL of unrelated logits is large); every form falls as the error grows. The forms were chosen
by measurement (benchmarks/label_free.md): among the plans an agmc search visits on ResNet-20, the logits
form ranks TEST accuracy better than reward-split accuracy itself, and NMSE ranks it better than
concordance or cosine similarity on a dense feature output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("logits", "probs", "embedding", "dense")
_EPS = 1e-12


@dataclass(frozen=True)
class OutputSpec:
    """One graph output: its name, how it is scored, and its weight in the run's fidelity."""

    name: str
    kind: str
    weight: float = 1.0


def output_kind(reference: Tensor) -> str:
    """The kind of an output from the original's values: rank-2 rows summing to 1 -> probs, unit-norm -> embedding,
    other rank-2 with C >= 2 -> logits; everything else dense."""
    if reference.dim() != 2 or reference.shape[1] < 2:
        return "dense"
    r = reference.double()
    if bool((r >= 0).all()) and bool(torch.allclose(r.sum(1), torch.ones(len(r), dtype=r.dtype), atol=1e-3)):
        return "probs"
    if bool(torch.allclose(r.norm(dim=1), torch.ones(len(r), dtype=r.dtype), atol=1e-3)):
        return "embedding"
    return "logits"


class Fidelity:
    """Scores candidates' outputs against the original's on the same inputs (the targets, computed once).

    `references` holds the original's outputs (one tensor per graph output, all N rows); `kinds` and
    `weights` (by output name) override the inferred kinds and the equal weights.
    """

    def __init__(self, references: Sequence[Tensor], names: Sequence[str] | None = None,
                 kinds: Mapping[str, str] | None = None, weights: Mapping[str, float] | None = None) -> None:  # fmt: skip
        names = list(names) if names is not None else [f"output{i}" for i in range(len(references))]
        if len(names) != len(references) or not references:
            raise ValueError(f"{len(references)} reference outputs for names {names}")
        unknown = sorted((set(kinds or {}) | set(weights or {})) - set(names))
        if unknown:
            raise ValueError(f"unknown output name(s) {unknown}; the model's outputs are {names}")
        self.references = [r.float() for r in references]
        self.specs: list[OutputSpec] = []
        for name, ref in zip(names, self.references, strict=True):
            kind = (kinds or {}).get(name) or output_kind(ref)
            if kind not in KINDS:
                raise ValueError(f"output {name!r}: kind must be one of {KINDS}, got {kind!r}")
            weight = float((weights or {}).get(name, 1.0))
            if not weight >= 0:
                raise ValueError(f"output {name!r}: weight must be >= 0, got {weight}")
            self.specs.append(OutputSpec(name, kind, weight))
        if sum(s.weight for s in self.specs) <= 0:
            raise ValueError("every output weight is 0")
        self.variances = [channel_variance(r) if s.kind == "dense" else None
                          for s, r in zip(self.specs, self.references, strict=True)]  # fmt: skip

    def insensitive(self, threshold: float = 1e-3) -> dict[str, float]:
        """Outputs that barely change with the input: their spread over the examples (std over axis 0, mean
        over elements) relative to their whole spread, where below `threshold`. Fidelity cannot rank
        candidates on such an output (a random-weight net whose activations vanish scores every plan 1.0)."""
        out: dict[str, float] = {}
        for spec, ref in zip(self.specs, self.references, strict=True):
            if len(ref) < 2:
                continue
            r = ref.double()
            ratio = float(r.std(0, unbiased=False).mean() / r.std(unbiased=False).clamp_min(_EPS))
            if ratio < threshold:
                out[spec.name] = ratio
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Each graph output's form and weight, as reports give them."""
        return [{"name": o.name, "kind": o.kind, "weight": o.weight} for o in self.specs]

    def __len__(self) -> int:
        """Number of examples the references cover."""
        return len(self.references[0])

    def start(self) -> Tally:
        """A running tally over batches of candidate outputs."""
        return Tally(self)

    def score(self, outputs: Sequence[Tensor]) -> float:
        """Fidelity of whole-split candidate outputs (one tensor per graph output)."""
        tally = self.start()
        tally.add(0, outputs)
        return tally.value()


class Tally:
    """Sums of per-example terms per output, added batch by batch (candidate outputs are not kept)."""

    def __init__(self, fidelity: Fidelity) -> None:
        self.f = fidelity
        self.sums: list[dict[str, Tensor]] = [{} for _ in fidelity.specs]
        self.count = 0

    def add(self, lo: int, outputs: Sequence[Tensor] | Tensor) -> None:
        """Candidate outputs for references rows lo .. lo + len(batch)."""
        outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        if len(outs) != len(self.f.specs):
            raise ValueError(f"{len(outs)} candidate outputs for {len(self.f.specs)} reference outputs")
        n = len(outs[0])
        for i, (spec, out) in enumerate(zip(self.f.specs, outs, strict=True)):
            ref = self.f.references[i][lo:lo + n].to(out.device)
            if out.shape != ref.shape:
                raise ValueError(f"output {spec.name!r}: candidate shape {list(out.shape)} vs original "
                                 f"{list(ref.shape)}")
            var = self.f.variances[i]
            for key, value in terms_of(spec.kind, out.float(), ref, None if var is None else var.to(out.device)).items():
                total = value.double().sum(0).cpu()
                self.sums[i][key] = self.sums[i][key] + total if key in self.sums[i] else total
        self.count += n

    def per_output(self) -> dict[str, float]:
        """Each output's fidelity in [0, 1]."""
        n = max(1, self.count)
        return {s.name: combine(s.kind, {k: v / n for k, v in sums.items()})
                for s, sums in zip(self.f.specs, self.sums, strict=True)}  # fmt: skip

    def value(self) -> float:
        """The weighted mean of the outputs' fidelities."""
        scores = self.per_output()
        total = sum(s.weight for s in self.f.specs)
        return sum(s.weight * scores[s.name] for s in self.f.specs) / total


def channel_variance(reference: Tensor) -> Tensor:
    """Variance of the original's output per channel (axis 1, over examples and positions), floored at 1e-6 of
    the MEDIAN channel's so a constant channel does not divide by zero. Not of the mean: in a YOLO output
    [N, 4 + classes, anchors] four box channels in pixels have variances ~1e7 times the class scores', and a
    floor from their mean erased every class channel from the score."""
    r = reference.double()
    r = r.reshape(len(r), r.shape[1] if r.dim() > 1 else 1, -1)
    v = r.transpose(0, 1).reshape(r.shape[1], -1).var(1, unbiased=False)
    return v.clamp_min(max(float(v.median()) * 1e-6, _EPS)).float()


def terms_of(kind: str, out: Tensor, ref: Tensor, variance: Tensor | None = None) -> dict[str, Tensor]:
    """Per-example terms whose means over examples `combine` turns into the output's fidelity (`variance`: the
    original's per-channel variance, dense outputs only)."""
    if kind in ("logits", "probs"):
        if kind == "logits":
            log_p, log_q = F.log_softmax(ref, 1), F.log_softmax(out, 1)
        else:
            log_p, log_q = ref.clamp_min(_EPS).log(), out.clamp_min(_EPS).log()
        kl = (log_p.exp() * (log_p - log_q)).sum(1).clamp_min(0.0)
        return {"agree": (out.argmax(1) == ref.argmax(1)).float(), "kl": kl}
    if kind == "embedding":
        return {"cos": F.cosine_similarity(out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1, eps=1e-8)}
    if variance is None:
        raise ValueError("a dense output's fidelity needs the original's per-channel variance")
    err = ((out.double() - ref.double()) ** 2).reshape(len(out), out.shape[1] if out.dim() > 1 else 1, -1).mean(2)
    return {"nmse": (err / variance.double()[None, :]).mean(1)}


def combine(kind: str, means: Mapping[str, Tensor]) -> float:
    """An output's fidelity in [0, 1] from the means of its terms over examples."""
    if kind in ("logits", "probs"):
        return 0.5 * float(means["agree"]) + 0.5 * float(torch.exp(-means["kl"]))
    if kind == "embedding":
        return max(0.0, float(means["cos"]))
    return float(torch.exp(-2 * means["nmse"]))
