"""Intermediate-feature distillation (FitNets' hint loss) between a pruned student and its original.

Both models are onnx2torch conversions of files whose nodes keep their names through surgery, so a place
in one is found in the other by module name. The places are stage ends: among the feature maps both
models produce at the same spatial size (channels may differ), the last one of each spatial size, the
deepest `count` of them. The student's channels (a subset, or fewer after pruning) are mapped to the
teacher's by a learned 1x1 projection, initialised by ridge least squares on a sample so the loss starts
small, and the error is normalised per teacher channel like the dense output loss (the variance floored at
1% of the median channel's, so dead ReLU channels do not dominate):

    L = mean over places p, channels c of  E[(P_p s_p - t_p)_c^2] / Var(t_p)_c
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from agmc_onnx.fidelity import channel_variance

RIDGE = 1e-3  # relative ridge of the least-squares initialisation: keeps it defined when channels are constant


def _record(module: nn.Module, names: Sequence[str], inputs: Sequence[Tensor]) -> dict[str, Tensor]:
    """Outputs of the named children on `inputs`, in the order they ran."""
    seen: dict[str, Tensor] = {}
    children = dict(module.named_children())
    handles = [children[n].register_forward_hook(lambda _m, _i, out, n=n: seen.setdefault(n, out))
               for n in names]  # fmt: skip
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _recorded_alike(student: nn.Module, teacher: nn.Module,
                    inputs: Sequence[Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:  # fmt: skip
    """(student's, teacher's) outputs of every child both models name alike, on `inputs`."""
    common = [n for n, _ in teacher.named_children() if n in dict(student.named_children())]
    return _record(student, common, inputs), _record(teacher, common, inputs)


def stage_ends(student: nn.Module, teacher: nn.Module, inputs: Sequence[Tensor], count: int) -> list[str]:
    """The deepest `count` stage ends both models name alike: 4-D float maps of equal spatial size (above 1x1:
    pooled vectors are the outputs' business), the student's channels no more than the teacher's, the last
    such map of each spatial size."""
    return _ends(*_recorded_alike(student, teacher, inputs), count)


def _ends(s_out: dict[str, Tensor], t_out: dict[str, Tensor], count: int) -> list[str]:
    """stage_ends on recorded outputs."""
    last: dict[tuple[int, ...], str] = {}
    for name, t in t_out.items():  # execution order: a later map of the same size replaces an earlier one
        s = s_out.get(name)
        if (isinstance(t, Tensor) and isinstance(s, Tensor) and t.dim() == 4 and s.dim() == 4
                and t.is_floating_point() and s.shape[2:] == t.shape[2:] and s.shape[1] <= t.shape[1]
                and min(t.shape[2:]) > 1):  # fmt: skip
            last.pop(tuple(t.shape[2:]), None)
            last[tuple(t.shape[2:])] = name
    return list(last.values())[-count:] if count > 0 else []


def _fit(s: Tensor, t: Tensor) -> nn.Conv2d:
    """A 1x1 conv from the student's channels to the teacher's, ridge least squares on one sample."""
    x = s.transpose(0, 1).reshape(s.shape[1], -1).T.double()  # [M, Cs]
    y = t.transpose(0, 1).reshape(t.shape[1], -1).T.double()  # [M, Ct]
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc
    ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=gram.dtype)
    w = torch.linalg.solve(gram + ridge, xc.T @ yc)  # [Cs, Ct]
    conv = nn.Conv2d(s.shape[1], t.shape[1], 1)
    with torch.no_grad():
        conv.weight.copy_(w.T.reshape(t.shape[1], s.shape[1], 1, 1).float())
        conv.bias.copy_((ym - xm @ w).float())
    return conv


class FeatureDistill:
    """Hooks on the student's and teacher's stage ends, one projection per place, and the hint loss."""

    def __init__(self, student: nn.Module, teacher: nn.Module, sample: Sequence[Tensor], count: int) -> None:
        s_out, t_out = _recorded_alike(student, teacher, sample)  # one forward each
        self.points = _ends(s_out, t_out, count)
        device = sample[0].device
        self.projections = nn.ModuleList([_fit(s_out[n].cpu(), t_out[n].cpu()) for n in self.points]).to(device)
        # floored at 1% of the median channel's: a ReLU map's dead channels must not dominate the mean
        self.variance = [(v := channel_variance(t_out[n])).clamp_min(0.01 * float(v.median())) for n in self.points]
        self.active = False  # hooks store activations only inside recording()
        self._seen: dict[str, dict[str, Tensor]] = {"student": {}, "teacher": {}}
        self._handles = []
        for who, module in (("student", student), ("teacher", teacher)):
            children = dict(module.named_children())
            for n in self.points:
                store = self._seen[who]
                self._handles.append(children[n].register_forward_hook(
                    lambda _m, _i, out, n=n, store=store: store.__setitem__(n, out) if self.active else None))  # fmt: skip

    def parameters(self) -> Iterator[nn.Parameter]:
        """The projections' parameters (trained beside the student, dropped at export)."""
        return self.projections.parameters()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the places' activations during one training step's forwards."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def loss(self) -> Tensor:
        """The hint loss of the last recorded step (then forgotten)."""
        s_seen, t_seen = self._seen["student"], self._seen["teacher"]
        terms = []
        for n, proj, var in zip(self.points, self.projections, self.variance, strict=True):
            err = (proj(s_seen[n]) - t_seen[n].detach()) ** 2
            terms.append((err.mean((0, 2, 3)) / var.to(err.device)).mean())
        s_seen.clear()
        t_seen.clear()
        return torch.stack(terms).mean()

    def close(self) -> None:
        """Remove the hooks (before the student is exported)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
