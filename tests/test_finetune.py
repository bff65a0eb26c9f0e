"""Fine-tuning through the converters: a damaged model recovers, the export matches torch in ORT."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from agmc_onnx.cli import main
from agmc_onnx.errors import InputError
from agmc_onnx.evaluate import evaluate_onnx
from agmc_onnx.finetune import FinetuneConfig, augment, finetune, torch_accuracy
from converters import to_onnx


def textures(n: int, seed: int, size: int = 16) -> SimpleNamespace:
    """4 classes of 1-channel texture (horizontal, vertical, diagonal stripes, checkerboard) in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    period = 4
    patterns = [
        (yy // 2) % 2,
        (xx // 2) % 2,
        ((xx + yy) // 2) % 2,
        ((xx // 2) + (yy // 2)) % 2,
    ]
    y = rng.integers(0, 4, n)
    shift = rng.integers(0, period, (n, 2))
    x = np.stack([np.roll(patterns[c], tuple(s), (0, 1)) for c, s in zip(y, shift, strict=True)])
    x = x.astype(np.float32) * 2 - 1 + rng.normal(scale=0.6, size=x.shape).astype(np.float32)
    return SimpleNamespace(x=x[:, None], y=y.astype(np.int64))


class SmallNet(nn.Module):
    """Conv-BN-ReLU x2, GAP, Linear: a stand-in for a pruned CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features, global average pool, classifier."""
        return self.fc(self.body(x).mean((2, 3)))


def damaged_model(path: Path | None = None, seed: int = 0) -> onnx.ModelProto:
    """An untrained SmallNet with scrambled BN statistics: a 'heavily damaged' model, BN kept."""
    torch.manual_seed(seed)
    net = SmallNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-2, 2)
                m.running_var.uniform_(0.1, 4)
    proto = to_onnx(
        net, sample_inputs=(torch.randn(2, 1, 16, 16),), input_names=["input"], output_names=["logits"]
    )
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 2
    if path is not None:
        onnx.save(proto, str(path))
    return proto


@pytest.fixture(scope="module")
def data() -> tuple[SimpleNamespace, SimpleNamespace, SimpleNamespace]:
    """Train, held-out and test splits of the texture task."""
    return textures(1024, 0), textures(256, 1), textures(384, 2)


@pytest.fixture(scope="module")
def trained(data: tuple) -> onnx.ModelProto:
    """The damaged model after one epoch: a decent model (teacher, and input to the 'hurts' test)."""
    train, held, _ = data
    cfg = FinetuneConfig(epochs=1, batch_size=32, lr=0.05, device="cpu")
    return finetune(damaged_model(), train, held, cfg, progress=False).proto


def test_one_epoch_raises_accuracy_and_export_matches(data: tuple) -> None:
    """One epoch lifts a damaged model well above chance; ORT accuracy equals torch's within 0.1 points."""
    train, held, test = data
    before = evaluate_onnx(damaged_model(), test)
    cfg = FinetuneConfig(epochs=1, batch_size=32, lr=0.05, device="cpu")
    result = finetune(damaged_model(), train, held, cfg, test=test, progress=False)
    assert result.best_epoch == 1 and len(result.history) == 1
    assert result.best_held_out > result.initial_held_out
    assert result.test_accuracy_onnx is not None and result.test_accuracy_torch is not None
    assert result.test_accuracy_onnx > before + 0.2, (before, result.test_accuracy_onnx)
    assert abs(result.test_accuracy_onnx - result.test_accuracy_torch) <= 0.001
    assert evaluate_onnx(result.proto, test) == result.test_accuracy_onnx
    assert [n.op_type for n in result.proto.graph.node].count("BatchNormalization") == 2
    assert [i.name for i in result.proto.graph.input] == ["input"]


def test_best_epoch_kept_even_when_training_hurts(data: tuple, trained: onnx.ModelProto) -> None:
    """With an absurd learning rate the epoch is worse than the input, so epoch 0 (the input) is kept."""
    train, held, _ = data
    cfg = FinetuneConfig(epochs=1, batch_size=64, lr=1e4, device="cpu", augment=False)
    result = finetune(trained, train, held, cfg, progress=False)
    assert result.history[0].held_out_accuracy < result.initial_held_out
    assert result.best_epoch == 0 and result.best_held_out == result.initial_held_out
    assert evaluate_onnx(result.proto, held) == pytest.approx(result.initial_held_out, abs=0.001)


def test_distillation_and_adamw_run(data: tuple, trained: onnx.ModelProto) -> None:
    """AdamW with a teacher: the loss includes the soft targets and training still improves."""
    train, held, _ = data
    cfg = FinetuneConfig(epochs=1, batch_size=32, optimizer="adamw", lr=3e-3, device="cpu")
    result = finetune(damaged_model(seed=1), train, held, cfg, teacher=trained, progress=False)
    assert result.best_held_out > result.initial_held_out
    assert result.history[0].loss > 0


def test_augment_shapes_and_content() -> None:
    """Crop keeps the shape and moves content by at most the padding; flip mirrors."""
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    assert torch.equal(augment(x, g, pad=0, flip=False), x)
    out = augment(x, g, pad=1, flip=False)
    assert out.shape == x.shape
    for i in range(2):  # every output is a shifted window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(out[i], padded[:, r : r + 8, c : c + 8]) for r in range(3) for c in range(3))
    flips = {bool(torch.equal(augment(x, g, pad=0)[0], x[0].flip(2))) for _ in range(20)}
    assert flips == {True, False}


def test_bad_config_is_input_error() -> None:
    """Negative epochs, an unknown optimiser: exit code 2."""
    with pytest.raises(InputError):
        FinetuneConfig(epochs=-1)
    with pytest.raises(InputError):
        FinetuneConfig(optimizer="rmsprop")
    with pytest.raises(InputError):
        FinetuneConfig(temperature=0.0)
    with pytest.raises(InputError):
        FinetuneConfig(color=-0.1)


def test_torch_accuracy_matches_labels() -> None:
    """A module that predicts the label exactly scores 1.0."""

    class Oracle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()

    d = SimpleNamespace(x=np.array([0, 2, 1, 1], np.float32).reshape(4, 1, 1, 1), y=np.array([0, 2, 1, 0]))
    assert torch_accuracy(Oracle(), d, torch.device("cpu")) == 0.75


def _save_npz(path: Path, train: SimpleNamespace, test: SimpleNamespace) -> None:
    """The texture data as an .npz the data loader reads (NHWC float images)."""
    np.savez(path, x_train=train.x.transpose(0, 2, 3, 1), y_train=train.y, x_test=test.x.transpose(0, 2, 3, 1),
             y_test=test.y)  # fmt: skip


def test_finetune_command_writes_model_report_and_gates(tmp_path: Path, data: tuple) -> None:
    """`agmc-onnx finetune` writes the model, a JSON + markdown report; an unmet gate exits 1 with one line."""
    train, _, test = data
    npz = tmp_path / "tex.npz"
    _save_npz(npz, train, test)
    model = tmp_path / "pruned.onnx"
    damaged_model(model)
    out, rep = tmp_path / "ft.onnx", tmp_path / "r.json"
    args = ["finetune", str(model), "--data", str(npz), "--epochs", "1", "--batch-size", "32", "--lr", "0.05",
            "--held-out", "256", "-o", str(out), "--report", str(rep), "--device", "cpu",
            "--bench-repeats", "2"]  # fmt: skip
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "epoch 1/1: loss " in ok.stderr  # not a terminal: a plain line per epoch instead of a live bar
    doc = json.loads(rep.read_text())
    assert doc["kind"] == "finetune" and doc["models"]["finetuned"]["path"] == str(out)
    assert doc["models"]["finetuned"]["accuracy"] > doc["models"]["pruned"]["accuracy"]
    assert rep.with_suffix(".md").exists() and onnx.load(str(out)).graph.node
    failed = CliRunner().invoke(main, [*args, "--no-progress", "--min-accuracy", "99.99"])
    assert failed.exit_code == 1
    lines = [ln for ln in failed.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("agmc-onnx: error: gate failed: min-accuracy")
    assert json.loads(rep.read_text())["gates"]["passed"] is False  # the report is written before the exit


def test_distillation_loss_zero_only_when_logits_agree() -> None:
    """Soft-target loss: zero for equal logits, positive otherwise, scaled by T^2."""
    from agmc_onnx.finetune import distillation_loss

    a = torch.tensor([[1.0, 2.0, 0.5]])
    assert float(distillation_loss(a, a, 4.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(a, torch.tensor([[2.0, 0.0, 1.0]]), 4.0)) > 0
