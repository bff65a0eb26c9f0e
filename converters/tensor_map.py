"""Which torch tensor of an onnx2torch conversion holds each ONNX initializer, found by shape and exact value.

The evaluator edits the converted original in place (slices or masks channel-holding tensors)
instead of converting every candidate; these maps say where each initializer landed: module names
follow node names (sanitised), and a 2-D initializer may sit transposed (Gemm transB=0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn


@dataclass
class Target:
    """One torch tensor that holds an ONNX initializer (maybe transposed, for Gemm transB=0)."""

    tensor: Tensor
    original: Tensor
    transposed: bool


@dataclass
class Slot:
    """Where a tensor lives in a module: owner and attribute, as parameter, buffer or plain attribute."""

    owner: nn.Module
    name: str
    kind: str  # "param", "buffer" or "attr"

    def set(self, t: Tensor) -> None:
        """Store `t` there."""
        if self.kind == "param":
            self.owner._parameters[self.name] = nn.Parameter(t, requires_grad=False)
        elif self.kind == "buffer":
            self.owner._buffers[self.name] = t
        else:
            self.owner.__dict__[self.name] = t


def sanitize(name: str) -> str:
    """A node / module name with every run of punctuation as one '/' (onnx2torch turns '.' into '/')."""
    return re.sub(r"[^0-9A-Za-z_]+", "/", name).strip("/")


def node_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Converted submodules by sanitised name (onnx2torch names each after its ONNX node)."""
    return {sanitize(name): m for name, m in module.named_modules() if name}


def own_matches(owner: nn.Module, arr: np.ndarray) -> list[tuple[Slot, Tensor, bool]]:
    """The module's own float tensors equal to `arr` (or to its transpose, for 2-D): (slot, tensor, transposed)."""
    own: dict[int, tuple[Slot, Tensor]] = {}
    for name, p in owner._parameters.items():
        if p is not None:
            own.setdefault(id(p), (Slot(owner, name, "param"), p))
    for name, b in owner._buffers.items():
        if b is not None:
            own.setdefault(id(b), (Slot(owner, name, "buffer"), b))
    for name, v in vars(owner).items():
        if isinstance(v, Tensor):
            own.setdefault(id(v), (Slot(owner, name, "attr"), v))
    hits = []
    for slot, t in own.values():
        if not t.is_floating_point():
            continue
        v = t.detach().cpu().numpy()
        if v.shape == arr.shape and np.array_equal(v, arr):
            hits.append((slot, t, False))
        elif arr.ndim == 2 and v.shape == arr.T.shape and np.array_equal(v, arr.T):
            hits.append((slot, t, True))
    return hits


def _array_views(module: nn.Module) -> list[tuple[Tensor, np.ndarray]]:
    """Every float parameter / buffer / tensor attribute of the module, with a numpy copy."""
    seen: dict[int, Tensor] = {}
    for _, t in list(module.named_parameters()) + list(module.named_buffers()):
        seen.setdefault(id(t), t)
    for m in module.modules():
        for v in vars(m).values():
            if isinstance(v, Tensor) and v.is_floating_point():
                seen.setdefault(id(v), v)
    return [(t, t.detach().cpu().numpy()) for t in seen.values() if t.is_floating_point()]


def map_initializers(module: nn.Module, inits: dict[str, np.ndarray], names: set[str]) -> dict[str, Target]:
    """Find the torch tensor holding each named initializer (by shape and exact value; 2-D may be transposed)."""
    views = _array_views(module)
    out: dict[str, Target] = {}
    for name in names:
        arr = inits[name]
        hits = [(t, False) for t, v in views if v.shape == arr.shape and np.array_equal(v, arr)]
        if not hits and arr.ndim == 2:
            hits = [(t, True) for t, v in views if v.shape == arr.T.shape and np.array_equal(v, arr.T)]
        distinct = {id(t) for t, _ in hits}
        if len(distinct) != 1:
            raise LookupError(f"initializer {name!r} matches {len(distinct)} tensors of the converted model")
        t, tr = hits[0]
        out[name] = Target(t, t.detach().clone(), tr)
    return out
