"""Scoring candidate plans on the reward split (accuracy, or fidelity to the original's outputs when there
are no labels), by slicing or masking the converted original.

The ORIGINAL model is converted to torch once (converters.to_torch / onnx2torch). A plan is applied
by cutting every channel-holding tensor of the converted module to the plan (slice mode), or by
zeroing the removed channels' positions in every *consumer* weight (exactly what `surgery.mask`
writes, and `run(mask) == run(prune)` is the engine's oracle), so scoring a candidate costs a few
tensor operations instead of surgery + conversion (converters.tensor_map finds the tensors). With
BN in the model, each candidate's BN statistics are re-estimated first (agmc_onnx.bn, EagleEye's
adaptive BN), which is what makes the accuracy of an un-fine-tuned candidate a usable reward.
Folded-BN models are scored raw (`bn_recalibrated` is False then). The fidelity reward
(agmc_onnx.fidelity) compares a candidate's outputs, every graph output, with the original's on the same
reward split, computed once when the Evaluator is built; every mode scores it the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from agmc_onnx.bn import bn_modules, recalibrate_bn
from agmc_onnx.data import fixed_batch
from agmc_onnx.devices import default_threads, device_default
from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.fidelity import Fidelity
from agmc_onnx.plan import Plan
from converters import to_torch
from converters.tensor_map import Slot, Target, map_initializers, node_modules, own_matches, sanitize

REWARDS = ("accuracy", "fidelity")


def as_inputs(data: Any) -> tuple[np.ndarray, ...]:
    """Every model input's array of a dataset (`.inputs`, else `.x`), or an array / tuple of arrays as given."""
    if hasattr(data, "inputs"):
        return tuple(data.inputs)
    if hasattr(data, "x"):
        return (data.x,)
    if isinstance(data, (tuple, list)):
        return tuple(data)
    return (data,)


def first(out: Any) -> Tensor:
    """A module's first output."""
    return out[0] if isinstance(out, (tuple, list)) else out


def all_outputs(out: Any) -> list[Tensor]:
    """A module's outputs as a list (one graph output: a list of one)."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


class Evaluator:
    """Scores plans of one analysed model on a reward split (train data), caching what it can.

    Args:
        analysis: the engine's Analysis of the model.
        reward: the reward split (`.x` float32 NCHW, `.y` int64 or None, `.extra` further model inputs),
            never the test set.
        calibration: images for BN re-calibration (a few hundred train images; default: the
            first `calib_images` of `reward`).
        bn_recalibrate: re-estimate BN statistics per candidate (on by default; no-op without BN).
        mode: "slice" (every channel-holding tensor of the converted original swapped for its
            sliced copy: the pruned network without surgery or conversion), "mask" (consumer
            weights zeroed on the converted original), "prune" (surgery + conversion per
            candidate) or "auto": slice when the model needs no surgery hooks other than a
            depthwise conv's `group` (set on the torch conv) and a self-check against surgery
            passes, else mask on a GPU or below 1024 images per score, else prune. A model whose
            prunable groups feed statistics (LayerNorm over the residual stream) is never masked:
            masking keeps the removed channels in every LayerNorm's mean and variance, the pruned
            network does not; slice (LayerNorm modules' normalized_shape follows their weights) or
            prune score it.
            Measured on 2 busy CPU cores, ResNet-20 at 50% MACs: conversion costs ~1.9 s per
            candidate, which slice mode avoids while running the smaller network.
        threads: torch CPU threads while scoring (None: `default_threads()` on CPU).
        reward_kind: "accuracy" (top-1 on the labels) or "fidelity" (the candidate's outputs vs the
            original's on the reward split; no labels needed; agmc_onnx.fidelity).
        output_kinds / output_weights: per graph output name, the fidelity form and weight (default:
            inferred kinds, equal weights).
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
        reward_kind: str = "accuracy",
        output_kinds: Mapping[str, str] | None = None,
        output_weights: Mapping[str, float] | None = None,
    ) -> None:
        if reward_kind not in REWARDS:
            raise InputError(f"reward must be one of {REWARDS}, got {reward_kind!r}")
        if reward_kind == "accuracy" and getattr(reward, "y", None) is None:
            raise InputError("the accuracy reward needs labels; this data has none (use the fidelity reward)")
        self.analysis = analysis
        self.reward_kind = reward_kind
        self.device = torch.device(device) if device else device_default()
        self.threads = threads if threads or self.device.type != "cpu" else default_threads()
        self.batch_size = fixed_batch(analysis.model.proto) or batch_size  # a static export: one at a time
        self.inputs = tuple(torch.as_tensor(a, device=self.device) for a in as_inputs(reward))
        self.x = self.inputs[0]
        y = getattr(reward, "y", None)
        self.y = None if y is None else torch.as_tensor(np.asarray(y, np.int64), device=self.device)
        calib = as_inputs(calibration) if calibration is not None else as_inputs(reward)
        self.calib_inputs = tuple(torch.as_tensor(a[:calib_images], device=self.device) for a in calib)
        self.calib = self.calib_inputs[0]
        self.module = to_torch(analysis.model.proto, trainable=False).to(self.device).eval()
        self._slots: list[tuple[Slot, int, Tensor]] = []
        self._groups_hooks: list[tuple[nn.Module, str, int, int]] = []  # (conv, input tensor, per group, groups)
        self.slice_fallback: str | None = None  # why "auto" could not slice
        stats = [g.id for g in analysis.prunable_groups() if getattr(g, "stats", ())]
        if mode == "mask" and stats:
            raise AgmcError(f"mask mode cannot score groups {stats[:5]}: LayerNorm statistics read them, and "
                            "masking is not removing there (use slice or prune)")
        self._norms = [m for m in self.module.modules() if isinstance(m, nn.LayerNorm)]
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
            mode = "mask" if (self.device.type == "cuda" or per_score < 1024) and not stats else "prune"
        self.mode = mode
        self.bns = bn_modules(self.module)
        self.bn_recalibrated = bool(bn_recalibrate and self.bns)
        self._bn_state = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in self.bns]
        self._members: list[tuple[int, str, int, np.ndarray, np.ndarray]] = []
        names: set[str] = set()
        for g in analysis.prunable_groups():
            for m in g.members:
                if m.role == g.mask_role:
                    self._members.append((g.id, m.tensor, m.axis, np.asarray(m.positions), np.asarray(m.channels)))
                    names.add(m.tensor)
        self.targets: dict[str, Target] = {}
        if mode == "mask":
            self.targets = map_initializers(self.module, analysis.model.inits, names)
        self.fidelity: Fidelity | None = None
        if reward_kind == "fidelity":  # the original's outputs on the reward split: the targets, computed once
            outputs = [o.name for o in analysis.model.proto.graph.output]
            self.fidelity = Fidelity(self.outputs(self.module), outputs, output_kinds, output_weights)
        self.calls = 0
        self.seconds = 0.0

    # slicing ------------------------------------------------------------------------------
    def _slice_slots(self) -> list[tuple[Slot, int, Tensor]]:
        """(where the tensor lives, transposed, original) for every initializer that holds group channels.

        Each initializer is looked up in the converted module of every node that reads it (an
        initializer shared by two nodes becomes two torch tensors), by value within that module.
        """
        from agmc_onnx.ops import DepthwiseGroups

        by_node = node_modules(self.module)
        for node, rewrite in getattr(self.analysis, "hooks", None) or []:
            conv = by_node.get(sanitize(node))
            if not isinstance(rewrite, DepthwiseGroups) or not isinstance(conv, nn.modules.conv._ConvNd):
                kind = type(rewrite).__name__
                raise LookupError(f"the model needs surgery hook {kind} at {node!r}: slicing alone is not the pruned model")
            self._groups_hooks.append((conv, rewrite.tensor, rewrite.per_group, conv.groups))
        names = sorted({name for name, _ in self.analysis.axis_map})
        readers: dict[str, list[str]] = {}
        for node in self.analysis.model.proto.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node.name)
        slots: list[tuple[Slot, int, Tensor]] = []
        self._slot_index: dict[str, list[int]] = {}
        for name in names:
            arr = self.analysis.model.inits[name]
            for node in dict.fromkeys(readers.get(name, [])):
                owner = by_node.get(sanitize(node))
                if owner is None:
                    raise LookupError(f"node {node!r} has no converted module")
                hits = own_matches(owner, arr)
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

    def _check_slicing(self, slots: list[tuple[Slot, int, Tensor]]) -> None:
        """Self-check: a sliced module computes what surgery + conversion computes, for one plan."""
        from agmc_onnx.plan import plan_from_ratios
        from agmc_onnx.surgery import prune

        plan = plan_from_ratios(self.analysis, {g.id: 0.5 for g in self.analysis.prunable_groups()}, round_to=1)
        n = 1 if self.batch_size == 1 else 4
        xs = [t[:n] for t in (self.calib_inputs if len(self.calib) else self.inputs)]
        reference = to_torch(prune(self.analysis, plan, check=False), trainable=False).to(self.device).eval()
        module = self._sliced(plan, slots)
        with torch.inference_mode():
            want, got = all_outputs(reference(*xs)), all_outputs(module(*xs))
        if len(want) != len(got) or any(
                w.shape != g.shape or not torch.allclose(w, g, rtol=1e-3, atol=1e-4) for w, g in zip(want, got, strict=True)):
            raise LookupError("sliced module differs from the pruned file's conversion")

    def _restore_slices(self, slots: list[tuple[Slot, int, Tensor]]) -> None:
        """Put every original tensor back (buffers as copies: BN re-calibration writes into them)."""
        for slot, _, original in slots:
            slot.set(original.clone() if slot.kind == "buffer" else original)
        for conv, _, _, groups in self._groups_hooks:
            conv.groups = groups
        self._fit_norms()

    def _fit_norms(self) -> None:
        """LayerNorm modules normalise over their (sliced or restored) weight's shape."""
        for m in self._norms:
            if m.weight is not None and tuple(m.normalized_shape) != tuple(m.weight.shape):
                m.normalized_shape = tuple(m.weight.shape)

    def _sliced(self, plan: Plan, slots: list[tuple[Slot, int, Tensor]] | None = None) -> nn.Module:
        """The converted original with every channel-holding tensor cut to the plan (no copies of the rest)."""
        from agmc_onnx.surgery import axis_masks, keep_mask

        slots = self._slots if slots is None else slots
        self._restore_slices(slots)
        current: dict[int, Tensor] = {}
        for (name, axis), keep in axis_masks(self.analysis, plan).items():
            for i in self._slot_index[name]:
                _, transposed, original = slots[i]
                t = current.get(i, original)
                ax = (original.dim() - 1 - axis) if transposed else axis
                current[i] = t.index_select(ax, torch.as_tensor(np.flatnonzero(keep), device=t.device))
        for i, t in current.items():
            slots[i][0].set(t.contiguous())
        for conv, tensor, per_group, _ in self._groups_hooks:  # depthwise: `groups` follows the kept inputs
            kept = int(keep_mask(self.analysis, self.analysis.tensor_channels(tensor), plan).sum())
            conv.groups = kept // per_group
        self._fit_norms()
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

        module = to_torch(prune(self.analysis, plan, check=False), trainable=False).to(self.device).eval()
        return module

    # BN and accuracy ----------------------------------------------------------------------
    def _recalibrate(self, module: nn.Module) -> None:
        """EagleEye adaptive BN over this evaluator's calibration images (see `recalibrate_bn`)."""
        recalibrate_bn(module, self.calib_inputs, self.batch_size)

    def _restore_bn(self) -> None:
        """Put the original BN statistics back (scoring without re-calibration)."""
        with torch.no_grad():
            for m, (mean, var, momentum) in zip(self.bns, self._bn_state, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.momentum = momentum

    def _batches(self) -> Any:
        """(row offset, the model's inputs) over the reward split in batches."""
        for i in range(0, len(self.x), self.batch_size):
            yield i, [t[i : i + self.batch_size] for t in self.inputs]

    def outputs(self, module: nn.Module) -> list[Tensor]:
        """Every graph output of `module` on the whole reward split."""
        parts: list[list[Tensor]] = []
        with torch.inference_mode():
            for _, xs in self._batches():
                parts.append(all_outputs(module(*xs)))
        return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]

    def accuracy(self, module: nn.Module) -> float:
        """Top-1 accuracy of `module` on the reward split."""
        if self.y is None:
            raise InputError("accuracy needs labels; the reward split has none")
        correct = 0
        with torch.inference_mode():
            for i, xs in self._batches():
                out = first(module(*xs))
                correct += int((out.argmax(1) == self.y[i : i + self.batch_size]).sum())
        return correct / max(1, len(self.x))

    def fidelity_of(self, module: nn.Module, per_output: bool = False) -> Any:
        """Fidelity of `module`'s outputs to the original's on the reward split (with `per_output`: by output)."""
        if self.fidelity is None:
            raise AgmcError("this evaluator scores accuracy; build it with reward_kind='fidelity'")
        tally = self.fidelity.start()
        with torch.inference_mode():
            for i, xs in self._batches():
                tally.add(i, all_outputs(module(*xs)))
        return tally.per_output() if per_output else tally.value()

    def reward(self, module: nn.Module) -> float:
        """The evaluator's reward of a ready module: accuracy or fidelity."""
        return self.fidelity_of(module) if self.reward_kind == "fidelity" else self.accuracy(module)

    def score(self, plan: Plan) -> float:
        """Reward (accuracy or fidelity) of the plan's candidate on the reward split (BN re-calibrated by default)."""
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
            value = self.reward(module)
        finally:
            torch.set_num_threads(before)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return value


def _session_batches(model: onnx.ModelProto | str | Path, dataset: Any, batch_size: int, kind: str) -> Any:
    """(offset, outputs) of a model run in ONNX Runtime over every input of `dataset`, batch by batch (batches
    of the model's fixed batch size when its input has one)."""
    from agmc_onnx.runtime import session

    sess = session(model, kind=kind)
    feeds = sess.get_inputs()
    arrays = as_inputs(dataset)
    if len(arrays) != len(feeds):
        raise InputError(f"the data has {len(arrays)} input array(s), the model takes {len(feeds)} "
                         f"({', '.join(f.name for f in feeds)})")
    fixed = feeds[0].shape[0] if feeds[0].shape else None
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    for i in range(0, len(arrays[0]), step):
        yield i, sess.run(None, {f.name: np.asarray(a[i : i + step]) for f, a in zip(feeds, arrays, strict=True)})


def evaluate_onnx(model: onnx.ModelProto | str | Path, dataset: Any, batch_size: int = 256, kind: str = "cpu") -> float:
    """Top-1 accuracy of an ONNX model on a labelled dataset, in ONNX Runtime (final, reported accuracies)."""
    y = getattr(dataset, "y", None)
    if y is None:
        raise InputError("accuracy needs labels; this data has none")
    y = np.asarray(y, np.int64)
    correct = 0
    for i, outs in _session_batches(model, dataset, batch_size, kind):
        out = outs[0]
        correct += int((out.argmax(1) == y[i : i + len(out)]).sum())
    return correct / max(1, len(y))


def onnx_outputs(model: onnx.ModelProto | str | Path, dataset: Any, batch_size: int = 256,
                 kind: str = "cpu") -> list[np.ndarray]:  # fmt: skip
    """Every graph output of an ONNX model on `dataset`, in ONNX Runtime."""
    parts = [outs for _, outs in _session_batches(model, dataset, batch_size, kind)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def reference_fidelity(original: onnx.ModelProto | str | Path, dataset: Any, kinds: Mapping[str, str] | None = None,
                       weights: Mapping[str, float] | None = None, batch_size: int = 256) -> Fidelity:  # fmt: skip
    """The original model's outputs on `dataset` (ONNX Runtime) as a Fidelity that scores other models' outputs."""
    proto = original if isinstance(original, onnx.ModelProto) else onnx.load(str(original), load_external_data=True)
    refs = onnx_outputs(proto, dataset, batch_size)
    return Fidelity([torch.from_numpy(r) for r in refs], [o.name for o in proto.graph.output], kinds, weights)


def fidelity_onnx(model: onnx.ModelProto | str | Path, dataset: Any, reference: Fidelity, batch_size: int = 256,
                  kind: str = "cpu") -> float:  # fmt: skip
    """Fidelity of an ONNX model's outputs on `dataset` to the reference's (built on the same dataset), in ORT."""
    if len(reference) != len(as_inputs(dataset)[0]):
        raise ValueError(f"the reference covers {len(reference)} examples, the data has {len(as_inputs(dataset)[0])}")
    tally = reference.start()
    for i, outs in _session_batches(model, dataset, batch_size, kind):
        tally.add(i, [torch.from_numpy(o) for o in outs])
    return tally.value()


