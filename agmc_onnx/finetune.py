"""Fine-tune a (pruned) ONNX model in PyTorch through converters/, keep the best epoch, export, verify in ORT.

With labels: cross-entropy on the first output (blended with distillation when a teacher is given). Without
labels: distillation alone, the student trained to reproduce the teacher's (the original's) outputs, every
graph output by its kind (agmc_onnx.distill), the best epoch picked by fidelity on the held-out slice.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from agmc_onnx.bn import bn_modules, recalibrate_bn
from agmc_onnx.data import fixed_batch
from agmc_onnx.distill import DistillLoss, augment, hinton_loss, is_image_batch
from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.evaluate import all_outputs, as_inputs, evaluate_onnx, fidelity_onnx, first
from agmc_onnx.feature_distill import FeatureDistill
from agmc_onnx.fidelity import Fidelity

# The exported model's test accuracy must match the torch model's within this many points.
MAX_EXPORT_GAP_POINTS = 0.1
# Without labels: the exported model's fidelity must match the torch model's within this.
MAX_EXPORT_GAP_FIDELITY = 1e-3
# Training inputs the BN statistics are re-estimated on after each epoch (as the search's evaluator does).
BN_CALIBRATION_IMAGES = 512

__all__ = ["FinetuneConfig", "FinetuneResult", "EpochStats", "augment", "distillation_loss", "finetune",
           "torch_accuracy", "torch_fidelity"]  # fmt: skip

distillation_loss = hinton_loss  # the name this module has always exported


class Data(Protocol):
    """What fine-tuning needs from a dataset: float32 NCHW images (`x`), int64 labels or None (`y`)."""

    x: np.ndarray
    y: np.ndarray | None


@dataclass
class FinetuneConfig:
    """Optimiser, schedule, augmentation and distillation settings."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (momentum, nesterov) or "adamw"
    lr: float | None = None  # default 0.01 for SGD, 1e-3 for AdamW
    weight_decay: float | None = None  # default 5e-4 for SGD, 0.05 for AdamW
    momentum: float = 0.9
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    augment: bool = True  # random crop with padding + horizontal flip (+ colour jitter), image inputs only
    flip: bool = True
    color: float = 0.0  # colour jitter: contrast x(1 +- c), brightness +- c batch std (off: it cost 0.6-0.8
    #                     points of distilled accuracy on Fashion-MNIST ResNet-56, benchmarks/label_free.md)
    bn_recalibrate: bool = True  # after each epoch, BN statistics re-estimated on clean training inputs
    distill_alpha: float = 0.5  # weight of the distillation loss when a teacher is given
    feature_points: int = 0  # also match this many intermediate stage ends (agmc_onnx.feature_distill); 0: off
    feature_weight: float = 1.0  # weight of that hint loss beside the output loss
    temperature: float = 1.0  # distillation softmax temperature: T=1 recovered 2.75 points more than Hinton's
    #                           T=4 in 2 epochs on ResNet-56 (benchmarks/label_free.md, "distillation recipe")
    device: str | None = None  # None: cuda when torch sees one, else cpu
    seed: int = 0
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        """Reject settings that cannot work."""
        if self.epochs < 0:
            raise InputError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be positive, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise InputError(f"distillation weight must be in [0, 1], got {self.distill_alpha}")
        if not self.temperature > 0:
            raise InputError(f"distillation temperature must be positive, got {self.temperature}")
        if self.feature_points < 0 or self.feature_weight < 0:
            raise InputError(f"feature distillation needs >= 0 places and weight, got {self.feature_points}, "
                             f"{self.feature_weight}")  # fmt: skip
        if self.color < 0:
            raise InputError(f"colour jitter must be >= 0, got {self.color}")

    @property
    def learning_rate(self) -> float:
        """The learning rate, defaulted per optimiser."""
        return self.lr if self.lr is not None else (0.01 if self.optimizer == "sgd" else 1e-3)

    @property
    def decay(self) -> float:
        """The weight decay, defaulted per optimiser."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05


@dataclass
class EpochStats:
    """One epoch: mean training loss, held-out score after it (accuracy, or fidelity without labels), last
    learning rate, seconds."""

    epoch: int
    loss: float
    held_out_accuracy: float
    lr: float
    seconds: float


@dataclass
class FinetuneResult:
    """The exported best model and what happened on the way."""

    proto: onnx.ModelProto = field(repr=False)
    best_epoch: int
    best_held_out: float
    initial_held_out: float
    history: list[EpochStats]
    device: str
    test_accuracy_torch: float | None = None
    test_accuracy_onnx: float | None = None
    selected_by: str = "accuracy"  # what best_held_out measures: "accuracy" or "fidelity" (no labels)
    test_fidelity_torch: float | None = None  # vs the teacher, when one was given
    test_fidelity_onnx: float | None = None
    feature_points: list[str] = field(default_factory=list)  # the stage ends matched (feature distillation)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (no model)."""
        d = asdict(self)
        d.pop("proto")
        return d


def pick_device(name: str | None = None) -> torch.device:
    """`name`, or cuda when torch sees a GPU, else cpu."""
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda asked but torch sees no GPU")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def torch_accuracy(module: nn.Module, data: Data, device: torch.device, batch_size: int = 512) -> float:
    """Top-1 accuracy of a module in eval mode (TF32 off so it matches ORT's float32)."""
    was_training = module.training
    module.eval()
    correct = 0
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            for i, xs in _batches(data, batch_size, device):
                pred = first(module(*xs)).argmax(1).cpu().numpy()
                correct += int((pred == data.y[i : i + batch_size]).sum())
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
    module.train(was_training)
    return correct / max(1, len(data.y))


def _batches(data: Any, batch_size: int, device: torch.device) -> Any:
    """(offset, every model input as a tensor on `device`) over `data` in batches."""
    arrays = as_inputs(data)
    for i in range(0, len(arrays[0]), batch_size):
        yield i, [torch.from_numpy(np.ascontiguousarray(a[i : i + batch_size])).to(device) for a in arrays]


@torch.no_grad()
def module_outputs(module: nn.Module, data: Any, device: torch.device, batch_size: int = 512) -> list[torch.Tensor]:
    """Every graph output of a module (eval mode, TF32 off) on `data`, on the CPU."""
    was_training = module.training
    module.eval()
    parts: list[list[torch.Tensor]] = []
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for _, xs in _batches(data, batch_size, device):
                parts.append([o.float().cpu() for o in all_outputs(module(*xs))])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    module.train(was_training)
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def torch_fidelity(module: nn.Module, data: Any, reference: Fidelity, device: torch.device,
                   batch_size: int = 512) -> float:  # fmt: skip
    """Fidelity of a module's outputs on `data` to the reference's (the teacher's on the same data)."""
    return reference.score(module_outputs(module, data, device, batch_size))


def _optimizer(module: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW; no weight decay on 1-D parameters (BN, biases)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def _schedule(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up for `warmup` steps, then cosine from 1 to 0 at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


class _Bar:
    """A rich progress bar, one task per epoch (silent when disabled); to a log (not a terminal), one plain line
    per finished epoch instead of a live bar."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
        self.plain = False
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.plain = not self.progress.console.is_terminal

    def __enter__(self) -> _Bar:
        if self.progress and not self.plain:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress and not self.plain:
            self.progress.__exit__(*exc)

    def line(self, text: str) -> None:
        """A finished epoch's line, to a log only (a terminal has the bar)."""
        if self.progress and self.plain:
            self.progress.console.print(text, highlight=False, soft_wrap=True)

    def epoch(self, epoch: int, epochs: int, steps: int) -> Any:
        """Start the bar of one epoch."""
        if not self.progress:
            return None
        return self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, info="")

    def update(self, task: Any, info: str, advance: int = 1) -> None:
        """Advance an epoch's bar and show `info`."""
        if self.progress and task is not None:
            self.progress.update(task, advance=advance, info=info)


def _output_names(model: str | Path | onnx.ModelProto) -> list[str]:
    """The graph output names of a model file or proto."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return [o.name for o in proto.graph.output]


def finetune(
    model: str | Path | onnx.ModelProto,
    train: Data,
    held_out: Data,
    config: FinetuneConfig | None = None,
    *,
    teacher: str | Path | onnx.ModelProto | None = None,
    test: Data | None = None,
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
    output_kinds: dict[str, str] | None = None,
    output_weights: dict[str, float] | None = None,
) -> FinetuneResult:
    """Train `model` on `train`, keep the epoch best on `held_out` (epoch 0 = as given), export, verify.

    With labels: cross-entropy (blended with distillation from `teacher` by `distill_alpha`), the best
    epoch by held-out accuracy. Without labels (`train.y` None) `teacher` is required: distillation alone,
    every graph output by its kind (`output_kinds` / `output_weights` override, agmc_onnx.distill), the
    best epoch by held-out fidelity to the teacher. The exported model must score in ONNX Runtime what the
    torch model scores on `test` (or `held_out`): accuracy within 0.1 points, or without labels fidelity
    within 0.001; otherwise an AgmcError is raised.
    """
    from converters import check_other_size, declared_axes, to_onnx, to_torch

    cfg = config or FinetuneConfig()
    source = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    fixed = fixed_batch(source)
    if fixed:  # a static export takes one example at a time
        cfg = replace(cfg, batch_size=fixed, eval_batch_size=fixed)
    labelled = train.y is not None and held_out.y is not None
    if len(train.x) == 0 or len(held_out.x) == 0:
        raise InputError("fine-tuning needs non-empty training and held-out data")
    if not labelled and teacher is None:
        raise InputError("the data has no labels: fine-tuning distils from the original model; give it as the "
                         "teacher (--distill ORIGINAL.onnx)")  # fmt: skip
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    student = to_torch(model).to(device)
    teacher_module = to_torch(teacher).to(device).eval() if teacher is not None else None
    names = _output_names(model)
    distill: DistillLoss | None = None
    held_ref: Fidelity | None = None
    if teacher_module is not None:
        for p in teacher_module.parameters():
            p.requires_grad_(False)
        sample = module_outputs(teacher_module, [a[:512] for a in as_inputs(train)], device, cfg.eval_batch_size)
        distill = DistillLoss(sample, names, cfg.temperature, output_kinds, output_weights)
        if not labelled:
            held_ref = Fidelity(module_outputs(teacher_module, held_out, device, cfg.eval_batch_size), names,
                                output_kinds, output_weights)  # fmt: skip
    xs_all = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in as_inputs(train)]
    y_all = torch.from_numpy(np.asarray(train.y, np.int64)).to(device) if labelled else None
    n = len(xs_all[0])
    bs = min(cfg.batch_size, n)
    steps = n // bs  # drop the ragged last batch: BN in train mode dislikes batches of one
    total = steps * cfg.epochs
    opt = _optimizer(student, cfg)
    hints: FeatureDistill | None = None
    if cfg.feature_points and teacher_module is not None:
        hints = FeatureDistill(student, teacher_module, [t[:64] for t in xs_all], cfg.feature_points)
        if hints.points:
            opt.add_param_group({"params": list(hints.parameters()), "weight_decay": 0.0})
        else:  # no 4-D map both models name alike (not an image model): outputs only, as the report shows
            hints.close()
            hints = None
    base_lrs = [g["lr"] for g in opt.param_groups]
    warmup = int(cfg.warmup_epochs * steps)
    use_aug = cfg.augment and is_image_batch(xs_all[0][:1])
    calib = [t[:BN_CALIBRATION_IMAGES] for t in xs_all]
    recal = cfg.bn_recalibrate and bool(bn_modules(student))

    def held_score() -> float:
        if held_ref is not None:
            return torch_fidelity(student, held_out, held_ref, device, cfg.eval_batch_size)
        return torch_accuracy(student, held_out, device, cfg.eval_batch_size)

    best = held_score()
    initial, best_epoch = best, 0
    best_state = copy.deepcopy(student.state_dict())
    history: list[EpochStats] = []
    step = 0
    with _Bar(progress) as bar:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            student.train()
            order = torch.randperm(n, generator=gen).to(device)
            task = bar.epoch(epoch, cfg.epochs, steps)
            loss_sum = 0.0
            for b in range(steps):
                scale = _schedule(step, total, warmup)
                for g, lr0 in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = lr0 * scale
                idx = order[b * bs : (b + 1) * bs]
                xs = [t[idx] for t in xs_all]
                if use_aug:
                    xs[0] = augment(xs[0], gen, flip=cfg.flip, color=cfg.color)
                kd = None
                with hints.recording() if hints is not None else contextlib.nullcontext():
                    outs = all_outputs(student(*xs))
                    if distill is not None and teacher_module is not None and (y_all is None or cfg.distill_alpha > 0):
                        with torch.no_grad():
                            targets = all_outputs(teacher_module(*xs))
                        kd = distill(outs, targets)
                        if hints is not None:
                            kd = kd + cfg.feature_weight * hints.loss()
                if y_all is None:
                    assert kd is not None  # no labels: a teacher was required above
                    loss = kd
                else:
                    loss = F.cross_entropy(outs[0], y_all[idx])
                    if kd is not None:
                        loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += float(loss.detach())
                bar.update(task, f"loss {loss_sum / (b + 1):.4f}")
            if recal:  # running stats of a few (augmented) steps lag the weights: re-estimate on clean inputs
                momenta = [m.momentum for m in bn_modules(student)]
                recalibrate_bn(student, calib, cfg.eval_batch_size)
                for m, momentum in zip(bn_modules(student), momenta, strict=True):
                    m.momentum = momentum
            score = held_score()
            stats = EpochStats(epoch, loss_sum / max(1, steps), score, opt.param_groups[0]["lr"], time.perf_counter() - t0)
            history.append(stats)
            what = "fidelity" if held_ref is not None else "held-out"
            bar.update(task, f"loss {stats.loss:.4f}  {what} {100 * score:.2f}%", advance=0)
            bar.line(f"epoch {epoch}/{cfg.epochs}: loss {stats.loss:.4f}  {what} {100 * score:.2f}%  {stats.seconds:.0f} s")
            if on_epoch:
                on_epoch(stats)
            if score > best:
                best, best_epoch = score, epoch
                best_state = copy.deepcopy(student.state_dict())
    if hints is not None:
        hints.close()
    student.load_state_dict(best_state)
    student.eval()
    # traced on real examples (at the fixed batch when the file fixes one: its reshapes hold it), declaring the
    # axes the file declared symbolic (a detector's height and width too), then run at another size
    samples = tuple(t[: fixed or 2] for t in xs_all)
    proto = to_onnx(student, sample_inputs=samples, dynamic_axes=declared_axes(source))
    if fixed:
        for value in [*proto.graph.input, *proto.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_value = fixed
    check_other_size(proto, student, samples)
    check = test if test is not None else held_out
    acc_torch = acc_onnx = fid_torch = fid_onnx = None
    if labelled and check.y is not None:
        acc_torch = torch_accuracy(student, check, device, cfg.eval_batch_size)
        acc_onnx = evaluate_onnx(proto, check)
        gap = 100 * abs(acc_torch - acc_onnx)
        if gap > MAX_EXPORT_GAP_POINTS:
            raise AgmcError(
                f"exported model disagrees with torch: {100 * acc_onnx:.2f}% in ONNX Runtime vs "
                f"{100 * acc_torch:.2f}% in torch ({gap:.2f} points > {MAX_EXPORT_GAP_POINTS})"
            )
    if teacher_module is not None:
        ref = Fidelity(module_outputs(teacher_module, check, device, cfg.eval_batch_size), names, output_kinds,
                       output_weights)  # fmt: skip
        fid_torch = torch_fidelity(student, check, ref, device, cfg.eval_batch_size)
        fid_onnx = fidelity_onnx(proto, check, ref)
        if not labelled and abs(fid_torch - fid_onnx) > MAX_EXPORT_GAP_FIDELITY:
            raise AgmcError(f"exported model disagrees with torch: fidelity {fid_onnx:.4f} in ONNX Runtime vs "
                            f"{fid_torch:.4f} in torch (> {MAX_EXPORT_GAP_FIDELITY})")
    on_test = test is not None
    return FinetuneResult(
        proto=proto,
        best_epoch=best_epoch,
        best_held_out=best,
        initial_held_out=initial,
        history=history,
        device=str(device),
        test_accuracy_torch=acc_torch if on_test else None,
        test_accuracy_onnx=acc_onnx if on_test else None,
        selected_by="fidelity" if held_ref is not None else "accuracy",
        test_fidelity_torch=fid_torch if on_test else None,
        test_fidelity_onnx=fid_onnx if on_test else None,
        feature_points=list(hints.points) if hints is not None else [],
    )
