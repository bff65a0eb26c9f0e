"""Distillation from the original model, for any output structure: one loss per graph output by its kind (the
same kinds the fidelity reward uses), and image augmentations that keep teacher and student on the same input.

Losses (averaged over outputs with the fidelity weights):
- ``logits``: Hinton's T^2 * KL(softmax(teacher/T) || softmax(student/T));
- ``probs``: KL(teacher || student) on the probabilities as given;
- ``embedding``: 1 - cosine similarity;
- ``dense``: squared error per channel (axis 1) divided by that channel's variance in the teacher's outputs
  (measured once on the training data), so box pixels and sigmoid scores weigh the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from agmc_onnx.fidelity import KINDS, channel_variance, output_kind


def hinton_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton's soft-target loss: T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t


@dataclass
class OutputLoss:
    """How one graph output is distilled: its kind, weight and (dense outputs) the teacher's channel variance."""

    name: str
    kind: str
    weight: float
    variance: Tensor | None = None


class DistillLoss:
    """The student-vs-teacher loss over every graph output, set up from the teacher's outputs on a sample."""

    def __init__(self, teacher_sample: Sequence[Tensor], names: Sequence[str], temperature: float = 4.0,
                 kinds: Mapping[str, str] | None = None, weights: Mapping[str, float] | None = None) -> None:  # fmt: skip
        self.temperature = temperature
        self.outputs: list[OutputLoss] = []
        for name, out in zip(names, teacher_sample, strict=True):
            kind = (kinds or {}).get(name) or output_kind(out)
            if kind not in KINDS:
                raise ValueError(f"output {name!r}: kind must be one of {KINDS}, got {kind!r}")
            var = channel_variance(out.detach()) if kind == "dense" else None
            self.outputs.append(OutputLoss(name, kind, float((weights or {}).get(name, 1.0)), var))
        self.total_weight = sum(o.weight for o in self.outputs) or 1.0

    def __call__(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        """The weighted mean of the per-output losses."""
        total = student[0].new_zeros(())
        for spec, s, t in zip(self.outputs, student, teacher, strict=True):
            if spec.weight:
                total = total + spec.weight * self.one(spec, s, t.detach())
        return total / self.total_weight

    def one(self, spec: OutputLoss, s: Tensor, t: Tensor) -> Tensor:
        """One output's loss."""
        if spec.kind == "logits":
            return hinton_loss(s, t, self.temperature)
        if spec.kind == "probs":
            p = t.clamp_min(1e-12)
            return (p * (p.log() - s.clamp_min(1e-12).log())).sum(1).mean()
        if spec.kind == "embedding":
            return (1 - F.cosine_similarity(s.reshape(len(s), -1), t.reshape(len(t), -1), dim=1)).mean()
        err = (s - t) ** 2
        err = err.reshape(len(err), err.shape[1] if err.dim() > 1 else 1, -1).mean((0, 2))
        assert spec.variance is not None
        return (err / spec.variance.to(err.device)).mean()


def is_image_batch(x: Tensor) -> bool:
    """An NCHW image batch worth augmenting: 4-D, 1 or 3 channels, at least 8x8."""
    return x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 8


def augment(x: Tensor, generator: torch.Generator, pad: int | None = None, flip: bool = True,
            color: float = 0.0) -> Tensor:  # fmt: skip
    """Random crop after zero padding (`pad` pixels, default H/8), random horizontal flip, and with `color` > 0 a
    random contrast (x(1 +- color)) and brightness shift (+- color, in units of the batch's std) per sample."""
    n, _, h, w = x.shape
    pad = max(1, round(h / 8)) if pad is None else pad
    dev = x.device
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(dev)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if color > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = (1 + color * (2 * torch.rand(n, generator=generator) - 1)).to(dev)[:, None, None, None]
        shift = (color * (2 * torch.rand(n, generator=generator) - 1)).to(dev)[:, None, None, None]
        x = (x - mean) * contrast + mean + shift * x.std().clamp_min(1e-6)
    return x
