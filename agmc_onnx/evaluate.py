"""Scoring candidate plans: accuracy on the reward split, masked fast path, BN re-calibration.

The ORIGINAL model is converted to torch once (converters.to_torch / onnx2torch). A plan is applied
by zeroing the removed channels' positions in every *consumer* weight (exactly what
`surgery.mask` writes, and `run(mask) == run(prune)` is the engine's oracle), so scoring a
candidate costs a few tensor multiplications instead of surgery + conversion. With BN in the
model, each candidate's BN statistics are re-estimated first (EagleEye's adaptive BN: running
stats reset, cumulative average over the calibration images, no gradient), which is what makes
the accuracy of an un-fine-tuned candidate a usable reward. Folded-BN models are scored raw
(`bn_recalibrated` is False then).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from agmc_onnx.plan import Plan


@dataclass
class _Target:
    """One torch tensor that holds an ONNX initializer (maybe transposed, for Gemm transB=0)."""

    tensor: Tensor
    original: Tensor
    transposed: bool


def device_default() -> torch.device:
    """CUDA when torch sees it, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to_torch(proto: onnx.ModelProto) -> nn.Module:
    """ONNX -> torch through the converters package (onnx2torch underneath)."""
    from converters import to_torch

    return to_torch(proto, trainable=False)


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


def map_initializers(module: nn.Module, inits: dict[str, np.ndarray], names: set[str]) -> dict[str, _Target]:
    """Find the torch tensor holding each named initializer (by shape and exact value; 2-D may be transposed)."""
    views = _array_views(module)
    out: dict[str, _Target] = {}
    for name in names:
        arr = inits[name]
        hits = [(t, False) for t, v in views if v.shape == arr.shape and np.array_equal(v, arr)]
        if not hits and arr.ndim == 2:
            hits = [(t, True) for t, v in views if v.shape == arr.T.shape and np.array_equal(v, arr.T)]
        distinct = {id(t) for t, _ in hits}
        if len(distinct) != 1:
            raise LookupError(f"initializer {name!r} matches {len(distinct)} tensors of the converted model")
        t, tr = hits[0]
        out[name] = _Target(t, t.detach().clone(), tr)
    return out


class Evaluator:
    """Scores plans of one analysed model on a reward split (train data), caching what it can.

    Args:
        analysis: the engine's Analysis of the model.
        reward: the reward split (`.x` float32 NCHW, `.y` int64), never the test set.
        calibration: images for BN re-calibration (a few hundred train images; default: the
            first `calib_images` of `reward`).
        bn_recalibrate: re-estimate BN statistics per candidate (on by default; no-op without BN).
        mode: "mask" (consumer weights zeroed on the converted original), "prune" (surgery +
            conversion per candidate) or "auto". Measured on 2 busy CPU cores, ResNet-20 at 50%
            MACs: conversion costs ~1.9 s per candidate, the pruned forward saves ~3 ms per image,
            so "auto" masks on a GPU and below 1024 images per score, and prunes above.
        threads: torch CPU threads while scoring (None: torch's default).
    """

    def __init__(
        self,
        analysis: Any,
        reward: Any,
        calibration: Any | None = None,
        bn_recalibrate: bool = True,
        batch_size: int = 256,
        calib_images: int = 512,
        device: str | torch.device | None = None,
        mode: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.analysis = analysis
        self.threads = threads
        self.device = torch.device(device) if device else device_default()
        self.batch_size = batch_size
        self.x = torch.as_tensor(np.asarray(reward.x, np.float32), device=self.device)
        self.y = torch.as_tensor(np.asarray(reward.y, np.int64), device=self.device)
        cx = np.asarray(calibration.x if calibration is not None and hasattr(calibration, "x") else
                        calibration if calibration is not None else reward.x, np.float32)[:calib_images]
        self.calib = torch.as_tensor(cx, device=self.device)
        if mode == "auto":
            per_score = len(self.x) + (len(self.calib) if bn_recalibrate else 0)
            mode = "mask" if self.device.type == "cuda" or per_score < 1024 else "prune"
        self.mode = mode
        self.module = _to_torch(analysis.model.proto).to(self.device).eval()
        self.bns = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn_recalibrated = bool(bn_recalibrate and self.bns)
        self._bn_state = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in self.bns]
        self._members: list[tuple[int, str, int, np.ndarray, np.ndarray]] = []
        names: set[str] = set()
        for g in analysis.prunable_groups():
            for m in g.members:
                if m.role == "consumer":
                    self._members.append((g.id, m.tensor, m.axis, np.asarray(m.positions), np.asarray(m.channels)))
                    names.add(m.tensor)
        self.targets: dict[str, _Target] = {}
        if mode == "mask":
            self.targets = map_initializers(self.module, analysis.model.inits, names)
        self.calls = 0
        self.seconds = 0.0

    # applying plans -----------------------------------------------------------------------
    def _apply_mask(self, plan: Plan) -> None:
        """Zero removed channels at every consumer; restore every other consumer weight."""
        masks: dict[str, np.ndarray] = {}
        for gid, tensor, axis, positions, channels in self._members:
            kept = plan.kept.get(gid)
            if kept is None or len(kept) == len(set(channels.tolist())):
                continue
            drop = positions[~np.isin(channels, np.asarray(kept))]
            if drop.size == 0:
                continue
            arr = self.analysis.model.inits[tensor]
            full = masks.setdefault(f"{tensor}\0{axis}", np.ones(arr.shape[axis], np.float32))
            full[drop] = 0.0
        with torch.no_grad():
            touched: dict[str, list[tuple[int, np.ndarray]]] = {}
            for key, vec in masks.items():
                tensor, axis = key.split("\0")
                touched.setdefault(tensor, []).append((int(axis), vec))
            for name, target in self.targets.items():
                w = target.original
                for axis, vec in touched.get(name, []):
                    shape = [1] * w.dim()
                    ax = (w.dim() - 1 - axis) if target.transposed else axis
                    shape[ax] = -1
                    w = w * torch.as_tensor(vec, device=w.device).view(shape)
                target.tensor.copy_(w)

    def _model_for(self, plan: Plan) -> nn.Module:
        """The module that computes the candidate."""
        if self.mode == "mask":
            self._apply_mask(plan)
            return self.module
        from agmc_onnx.surgery import prune

        module = _to_torch(prune(self.analysis, plan, check=False)).to(self.device).eval()
        return module

    # BN and accuracy ----------------------------------------------------------------------
    def _recalibrate(self, module: nn.Module) -> None:
        """EagleEye adaptive BN: reset running stats, cumulative average over the calibration images."""
        bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i in range(0, len(self.calib), self.batch_size):
                module(self.calib[i : i + self.batch_size])
        for m in bns:
            m.eval()

    def _restore_bn(self) -> None:
        """Put the original BN statistics back (scoring without re-calibration)."""
        with torch.no_grad():
            for m, (mean, var, momentum) in zip(self.bns, self._bn_state, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.momentum = momentum

    def accuracy(self, module: nn.Module) -> float:
        """Top-1 accuracy of `module` on the reward split."""
        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.x), self.batch_size):
                out = module(self.x[i : i + self.batch_size])
                out = out[0] if isinstance(out, (tuple, list)) else out
                correct += int((out.argmax(1) == self.y[i : i + self.batch_size]).sum())
        return correct / max(1, len(self.x))

    def score(self, plan: Plan) -> float:
        """Accuracy of the plan's candidate on the reward split (BN re-calibrated by default)."""
        t0 = time.perf_counter()
        before = torch.get_num_threads()
        if self.threads:  # on 2 shared cores one thread was 9x faster than two fighting (measured)
            torch.set_num_threads(self.threads)
        try:
            module = self._model_for(plan)
            if self.bn_recalibrated:
                self._recalibrate(module)
            elif self.mode == "mask":
                self._restore_bn()
            acc = self.accuracy(module)
        finally:
            torch.set_num_threads(before)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return acc


def evaluate_onnx(model: onnx.ModelProto | str | Path, dataset: Any, batch_size: int = 256, kind: str = "cpu") -> float:
    """Top-1 accuracy of an ONNX model on a dataset, in ONNX Runtime (final, reported accuracies)."""
    from agmc_onnx.runtime import session

    sess = session(model, kind=kind)
    name = sess.get_inputs()[0].name
    x, y = np.asarray(dataset.x, np.float32), np.asarray(dataset.y, np.int64)
    correct = 0
    for i in range(0, len(x), batch_size):
        out = sess.run(None, {name: x[i : i + batch_size]})[0]
        correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(1, len(x))
