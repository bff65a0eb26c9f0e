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

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from agmc_onnx.errors import AgmcError
from agmc_onnx.plan import Plan


@dataclass
class _Target:
    """One torch tensor that holds an ONNX initializer (maybe transposed, for Gemm transB=0)."""

    tensor: Tensor
    original: Tensor
    transposed: bool


@dataclass
class _Slot:
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


def _sanitize(name: str) -> str:
    """A node / module name with every run of punctuation as one '/' (onnx2torch turns '.' into '/')."""
    return re.sub(r"[^0-9A-Za-z_]+", "/", name).strip("/")


def _node_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Converted submodules by sanitised name (onnx2torch names each after its ONNX node)."""
    return {_sanitize(name): m for name, m in module.named_modules() if name}


def _own_matches(owner: nn.Module, arr: np.ndarray) -> list[tuple[_Slot, Tensor, bool]]:
    """The module's own float tensors equal to `arr` (or to its transpose, for 2-D): (slot, tensor, transposed)."""
    own: dict[int, tuple[_Slot, Tensor]] = {}
    for name, p in owner._parameters.items():
        if p is not None:
            own.setdefault(id(p), (_Slot(owner, name, "param"), p))
    for name, b in owner._buffers.items():
        if b is not None:
            own.setdefault(id(b), (_Slot(owner, name, "buffer"), b))
    for name, v in vars(owner).items():
        if isinstance(v, Tensor):
            own.setdefault(id(v), (_Slot(owner, name, "attr"), v))
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


def device_default() -> torch.device:
    """CUDA when torch sees it, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_threads() -> int:
    """CPU threads for scoring: the cores the 1-minute load average leaves free (at least one).

    Measured on 2 busy cores: one thread scored 9x faster than two fighting other processes.
    """
    import os

    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


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
        mode: "slice" (every channel-holding tensor of the converted original swapped for its
            sliced copy: the pruned network without surgery or conversion), "mask" (consumer
            weights zeroed on the converted original), "prune" (surgery + conversion per
            candidate) or "auto": slice when the model needs no surgery hooks other than a
            depthwise conv's `group` (set on the torch conv) and a self-check against surgery
            passes, else mask on a GPU or below 1024 images per score, else prune.
            Measured on 2 busy CPU cores, ResNet-20 at 50% MACs: conversion costs ~1.9 s per
            candidate, which slice mode avoids while running the smaller network.
        threads: torch CPU threads while scoring (None: `default_threads()` on CPU).
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
        self.device = torch.device(device) if device else device_default()
        self.threads = threads if threads or self.device.type != "cpu" else default_threads()
        self.batch_size = batch_size
        self.x = torch.as_tensor(np.asarray(reward.x, np.float32), device=self.device)
        self.y = torch.as_tensor(np.asarray(reward.y, np.int64), device=self.device)
        cx = np.asarray(calibration.x if calibration is not None and hasattr(calibration, "x") else
                        calibration if calibration is not None else reward.x, np.float32)[:calib_images]
        self.calib = torch.as_tensor(cx, device=self.device)
        self.module = _to_torch(analysis.model.proto).to(self.device).eval()
        self._slots: list[tuple[_Slot, int, Tensor]] = []
        self._groups_hooks: list[tuple[nn.Module, str, int, int]] = []  # (conv, input tensor, per group, groups)
        self.slice_fallback: str | None = None  # why "auto" could not slice
        if mode in ("auto", "slice"):
            try:
                self._slots = self._slice_slots()
            except (LookupError, RuntimeError, AgmcError) as exc:
                if mode == "slice":
                    raise
                self.slice_fallback = str(exc)
                self._groups_hooks = []
            else:
                mode = "slice"
        if mode == "auto":
            per_score = len(self.x) + (len(self.calib) if bn_recalibrate else 0)
            mode = "mask" if self.device.type == "cuda" or per_score < 1024 else "prune"
        self.mode = mode
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

    # slicing ------------------------------------------------------------------------------
    def _slice_slots(self) -> list[tuple[_Slot, int, Tensor]]:
        """(where the tensor lives, transposed, original) for every initializer that holds group channels.

        Each initializer is looked up in the converted module of every node that reads it (an
        initializer shared by two nodes becomes two torch tensors), by value within that module.
        """
        from agmc_onnx.ops import DepthwiseGroups

        by_node = _node_modules(self.module)
        for node, rewrite in getattr(self.analysis, "hooks", None) or []:
            conv = by_node.get(_sanitize(node))
            if not isinstance(rewrite, DepthwiseGroups) or not isinstance(conv, nn.modules.conv._ConvNd):
                kind = type(rewrite).__name__
                raise LookupError(f"the model needs surgery hook {kind} at {node!r}: slicing alone is not the pruned model")
            self._groups_hooks.append((conv, rewrite.tensor, rewrite.per_group, conv.groups))
        names = sorted({name for name, _ in self.analysis.axis_map})
        readers: dict[str, list[str]] = {}
        for node in self.analysis.model.proto.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node.name)
        slots: list[tuple[_Slot, int, Tensor]] = []
        self._slot_index: dict[str, list[int]] = {}
        for name in names:
            arr = self.analysis.model.inits[name]
            for node in dict.fromkeys(readers.get(name, [])):
                owner = by_node.get(_sanitize(node))
                if owner is None:
                    raise LookupError(f"node {node!r} has no converted module")
                hits = _own_matches(owner, arr)
                if len(hits) != 1:
                    raise LookupError(f"initializer {name!r} matches {len(hits)} tensors of {node!r}'s module")
                slot, t, transposed = hits[0]
                self._slot_index.setdefault(name, []).append(len(slots))
                slots.append((slot, int(transposed), t.detach().clone()))
        try:
            self._check_slicing(slots)
        finally:
            self._restore_slices(slots)
        return slots

    def _check_slicing(self, slots: list[tuple[_Slot, int, Tensor]]) -> None:
        """Self-check: a sliced module computes what surgery + conversion computes, for one plan."""
        from agmc_onnx.plan import plan_from_ratios
        from agmc_onnx.surgery import prune

        plan = plan_from_ratios(self.analysis, {g.id: 0.5 for g in self.analysis.prunable_groups()}, round_to=1)
        x = self.calib[:4] if len(self.calib) else self.x[:4]
        reference = _to_torch(prune(self.analysis, plan, check=False)).to(self.device).eval()
        module = self._sliced(plan, slots)
        with torch.inference_mode():
            want, got = reference(x), module(x)
        want = want[0] if isinstance(want, (tuple, list)) else want
        got = got[0] if isinstance(got, (tuple, list)) else got
        if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-3, atol=1e-4):
            raise LookupError("sliced module differs from the pruned file's conversion")

    def _restore_slices(self, slots: list[tuple[_Slot, int, Tensor]]) -> None:
        """Put every original tensor back (buffers as copies: BN re-calibration writes into them)."""
        for slot, _, original in slots:
            slot.set(original.clone() if slot.kind == "buffer" else original)
        for conv, _, _, groups in self._groups_hooks:
            conv.groups = groups

    def _sliced(self, plan: Plan, slots: list[tuple[_Slot, int, Tensor]] | None = None) -> nn.Module:
        """The converted original with every channel-holding tensor cut to the plan (no copies of the rest)."""
        from agmc_onnx.surgery import _axis_masks

        slots = self._slots if slots is None else slots
        self._restore_slices(slots)
        current: dict[int, Tensor] = {}
        for (name, axis), keep in _axis_masks(self.analysis, plan).items():
            for i in self._slot_index[name]:
                _, transposed, original = slots[i]
                t = current.get(i, original)
                ax = (original.dim() - 1 - axis) if transposed else axis
                current[i] = t.index_select(ax, torch.as_tensor(np.flatnonzero(keep), device=t.device))
        for i, t in current.items():
            slots[i][0].set(t.contiguous())
        for conv, tensor, per_group, _ in self._groups_hooks:  # depthwise: `groups` follows the kept inputs
            kept = int(self.analysis.keep_mask(self.analysis.tensor_channels(tensor), plan).sum())
            conv.groups = kept // per_group
        return self.module

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
        if self.mode == "slice":
            return self._sliced(plan)
        if self.mode == "mask":
            self._apply_mask(plan)
            return self.module
        from agmc_onnx.surgery import prune

        module = _to_torch(prune(self.analysis, plan, check=False)).to(self.device).eval()
        return module

    # BN and accuracy ----------------------------------------------------------------------
    def _recalibrate(self, module: nn.Module) -> None:
        """EagleEye adaptive BN over this evaluator's calibration images (see `recalibrate_bn`)."""
        recalibrate_bn(module, self.calib, self.batch_size)

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
        with torch.inference_mode():
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
                self._restore_bn()  # slice mode: sliced stats are fresh copies, whole ones untouched
            acc = self.accuracy(module)
        finally:
            torch.set_num_threads(before)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return acc


def _bn_modules(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The module's BN layers in registration order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_bn(module: nn.Module, images: Tensor, batch_size: int = 256) -> None:
    """EagleEye adaptive BN: reset running stats, cumulative average over `images` in train mode, no gradient."""
    bns = _bn_modules(module)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            module(images[i : i + batch_size])
    for m in bns:
        m.eval()


def bn_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The BatchNormalization nodes of a model, in graph order."""
    return [n for n in proto.graph.node if n.op_type == "BatchNormalization"]


def write_bn_stats(proto: onnx.ModelProto, module: nn.Module) -> onnx.ModelProto:
    """A copy of `proto` whose BN mean/var initializers hold `module`'s running statistics.

    `module` is `proto` converted by onnx2torch, which adds one BN module per BatchNormalization
    node in graph order; the pairing is checked (count, width, scale values) and a mismatch raises.
    """
    from onnx import numpy_helper

    nodes, bns = bn_nodes(proto), _bn_modules(module)
    if len(nodes) != len(bns):
        raise LookupError(f"{len(nodes)} BatchNormalization nodes but {len(bns)} BN modules after conversion")
    out = copy.deepcopy(proto)
    inits = {t.name: i for i, t in enumerate(out.graph.initializer)}
    written: dict[str, np.ndarray] = {}
    for node, bn in zip(nodes, bns, strict=True):
        scale = numpy_helper.to_array(out.graph.initializer[inits[node.input[1]]]) if node.input[1] in inits else None
        if scale is None or scale.shape != (bn.num_features,) or (
            bn.weight is not None and not np.allclose(scale, bn.weight.detach().cpu().numpy())
        ):
            raise LookupError(f"BN node {node.name!r} does not pair with the converted module's BN layer")
        for name, value in ((node.input[3], bn.running_mean), (node.input[4], bn.running_var)):
            if name not in inits:
                raise LookupError(f"BN statistic {name!r} of {node.name!r} is not an initializer")
            arr = value.detach().cpu().numpy()
            if name in written and not np.array_equal(written[name], arr):
                raise LookupError(f"BN statistic {name!r} is shared by BN layers with different statistics")
            old = out.graph.initializer[inits[name]]
            dtype = numpy_helper.to_array(old).dtype
            old.CopyFrom(numpy_helper.from_array(arr.astype(dtype), name))
            written[name] = arr
    return out


def recalibrated_onnx(proto: onnx.ModelProto, images: Any, batch_size: int = 256,
                      device: str | torch.device | None = None) -> onnx.ModelProto:  # fmt: skip
    """`proto` with BN statistics re-estimated on `images` exactly as the Evaluator scores (unchanged without BN)."""
    if not bn_nodes(proto):
        return proto
    dev = torch.device(device) if device else device_default()
    module = _to_torch(proto).to(dev).eval()
    raw = getattr(images, "x", images)
    x = raw.to(dev, torch.float32) if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw, np.float32), device=dev)
    recalibrate_bn(module, x, batch_size)
    return write_bn_stats(proto, module)


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
