"""Fine-tune a (pruned) ONNX model in PyTorch through converters/, keep the best epoch, export, verify in ORT."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.evaluate import evaluate_onnx

# The exported model's test accuracy must match the torch model's within this many points.
MAX_EXPORT_GAP_POINTS = 0.1


class Data(Protocol):
    """What fine-tuning needs from a dataset: float32 NCHW images and int64 labels."""

    x: np.ndarray
    y: np.ndarray


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
    augment: bool = True  # random crop with padding + horizontal flip
    flip: bool = True
    distill_alpha: float = 0.5  # weight of the distillation loss when a teacher is given
    temperature: float = 4.0
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
    """One epoch: mean training loss, held-out accuracy after it, last learning rate, seconds."""

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


def augment(
    x: torch.Tensor, generator: torch.Generator, pad: int | None = None, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding (`pad` pixels, default H/8) and random horizontal flip, per sample."""
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
    return x


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t


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
            for i in range(0, len(data.y), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(data.x[i : i + batch_size])).to(device)
                pred = module(x).argmax(1).cpu().numpy()
                correct += int((pred == data.y[i : i + batch_size]).sum())
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
    module.train(was_training)
    return correct / max(1, len(data.y))


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
    """A rich progress bar, one task per epoch (silent when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
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

    def __enter__(self) -> _Bar:
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def epoch(self, epoch: int, epochs: int, steps: int) -> Any:
        """Start the bar of one epoch."""
        if not self.progress:
            return None
        return self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, info="")

    def update(self, task: Any, info: str, advance: int = 1) -> None:
        """Advance an epoch's bar and show `info`."""
        if self.progress and task is not None:
            self.progress.update(task, advance=advance, info=info)


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
) -> FinetuneResult:
    """Train `model` on `train`, keep the epoch best on `held_out` (epoch 0 = as given), export, verify.

    The exported model's accuracy in ONNX Runtime must equal the torch model's within 0.1 points on
    `test` (or on `held_out` when no test set is given); otherwise an AgmcError is raised.
    """
    from converters import to_onnx, to_torch

    cfg = config or FinetuneConfig()
    if len(train.y) == 0 or len(held_out.y) == 0:
        raise InputError("fine-tuning needs non-empty training and held-out data")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    student = to_torch(model).to(device)
    teacher_module = to_torch(teacher).to(device).eval() if teacher is not None else None
    if teacher_module is not None:
        for p in teacher_module.parameters():
            p.requires_grad_(False)
    x_all = torch.from_numpy(np.ascontiguousarray(train.x)).to(device)
    y_all = torch.from_numpy(np.asarray(train.y, np.int64)).to(device)
    n = len(y_all)
    bs = min(cfg.batch_size, n)
    steps = n // bs  # drop the ragged last batch: BN in train mode dislikes batches of one
    total = steps * cfg.epochs
    opt = _optimizer(student, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    warmup = int(cfg.warmup_epochs * steps)
    use_aug = cfg.augment and x_all.ndim == 4 and min(x_all.shape[2:]) >= 8

    best = torch_accuracy(student, held_out, device, cfg.eval_batch_size)
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
                x, y = x_all[idx], y_all[idx]
                if use_aug:
                    x = augment(x, gen, flip=cfg.flip)
                logits = student(x)
                loss = F.cross_entropy(logits, y)
                if teacher_module is not None and cfg.distill_alpha > 0:
                    with torch.no_grad():
                        soft = teacher_module(x)
                    kd = distillation_loss(logits, soft, cfg.temperature)
                    loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += float(loss.detach())
                bar.update(task, f"loss {loss_sum / (b + 1):.4f}")
            acc = torch_accuracy(student, held_out, device, cfg.eval_batch_size)
            stats = EpochStats(
                epoch, loss_sum / max(1, steps), acc, opt.param_groups[0]["lr"], time.perf_counter() - t0
            )
            history.append(stats)
            bar.update(task, f"loss {stats.loss:.4f}  held-out {100 * acc:.2f}%", advance=0)
            if on_epoch:
                on_epoch(stats)
            if acc > best:
                best, best_epoch = acc, epoch
                best_state = copy.deepcopy(student.state_dict())
    student.load_state_dict(best_state)
    student.eval()
    proto = to_onnx(student)
    check = test if test is not None else held_out
    acc_torch = torch_accuracy(student, check, device, cfg.eval_batch_size)
    acc_onnx = evaluate_onnx(proto, check)
    gap = 100 * abs(acc_torch - acc_onnx)
    if gap > MAX_EXPORT_GAP_POINTS:
        raise AgmcError(
            f"exported model disagrees with torch: {100 * acc_onnx:.2f}% in ONNX Runtime vs "
            f"{100 * acc_torch:.2f}% in torch ({gap:.2f} points > {MAX_EXPORT_GAP_POINTS})"
        )
    return FinetuneResult(
        proto=proto,
        best_epoch=best_epoch,
        best_held_out=best,
        initial_held_out=initial,
        history=history,
        device=str(device),
        test_accuracy_torch=acc_torch if test is not None else None,
        test_accuracy_onnx=acc_onnx if test is not None else None,
    )
