"""Intermediate-feature distillation: the places found in a real pruned ResNet-20 and its original, a
student equal to its teacher costs ~nothing, gradients reach student and projections, hooks go away, and a
label-free fine-tune with feature maps exports the model's own outputs only and recovers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from agmc_onnx.data.dataset import Dataset
from agmc_onnx.data.idx import read_idx
from agmc_onnx.feature_distill import FeatureDistill, stage_ends
from agmc_onnx.finetune import FinetuneConfig, finetune
from agmc_onnx.workflows.engine import prune_model
from converters import to_torch

ROOT = Path(__file__).resolve().parents[1]
RESNET20 = ROOT / "fixtures" / "models" / "resnet20.onnx"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Shipped Fashion-MNIST train images as the model reads them: [N, 1, 28, 28] in [0, 1]."""
    x = read_idx(ROOT / "fixtures" / "data" / "train-images-idx3-ubyte.gz")[:600]
    return (x.astype(np.float32) / 255)[:, None]


@pytest.fixture(scope="module")
def pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(ResNet-20 pruned uniformly to 50% MACs, its original)."""
    return prune_model(RESNET20, 0.5, "uniform").proto, onnx.load(str(RESNET20))


def test_stage_ends_are_one_per_size_and_named_in_both(pair: tuple, images: np.ndarray) -> None:
    student, teacher = (to_torch(p).eval() for p in pair)
    x = [torch.from_numpy(images[:16])]
    points = stage_ends(student, teacher, x, 3)
    assert len(points) == 3 and len(set(points)) == 3
    s_names, t_names = dict(student.named_children()), dict(teacher.named_children())
    assert all(p in s_names and p in t_names for p in points)
    sizes = []
    for p in points:
        seen: list[torch.Tensor] = []
        h = s_names[p].register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        student(*x)
        h.remove()
        sizes.append(tuple(seen[0].shape[2:]))
    assert sizes == sorted(set(sizes), reverse=True) and min(min(s) for s in sizes) > 1  # stages, deepest last
    assert stage_ends(student, teacher, x, 1) == points[-1:] and stage_ends(student, teacher, x, 0) == []
    stranger = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))  # no place named alike: nothing to match
    assert stage_ends(student, stranger, x, 3) == []


def test_a_student_equal_to_its_teacher_costs_nothing(pair: tuple, images: np.ndarray) -> None:
    teacher = to_torch(pair[1]).eval()
    student = to_torch(pair[1]).eval()
    x = [torch.from_numpy(images[:64])]
    hints = FeatureDistill(student, teacher, x, 2)
    with hints.recording():
        student(*x)
        teacher(*x)
    assert float(hints.loss()) < 1e-3  # the least-squares projection starts at ~identity


def test_gradients_reach_student_and_projections_and_hooks_go(pair: tuple, images: np.ndarray) -> None:
    student, teacher = to_torch(pair[0]).train(), to_torch(pair[1]).eval()
    x = [torch.from_numpy(images[:32])]
    hints = FeatureDistill(student, teacher, x, 2)
    with hints.recording():
        student(*x)
        with torch.no_grad():
            teacher(*x)
    loss = hints.loss()
    assert float(loss) > 0
    loss.backward()
    assert all(p.grad is not None for p in hints.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    hints.close()
    student(*x)  # no hook left to record (or fail)
    with hints.recording():
        student(*x)
    assert hints._seen["student"] == {}


def test_label_free_finetune_with_feature_maps(pair: tuple, images: np.ndarray) -> None:
    """Two feature maps beside the output: the export has the model's own outputs only, fidelity rises."""
    train = Dataset(x=images[:512], y=None, classes=[str(i) for i in range(10)])
    held = Dataset(x=images[512:], y=None, classes=train.classes)
    cfg = FinetuneConfig(epochs=1, batch_size=64, seed=0, device="cpu", feature_points=2)
    res = finetune(pair[0], train, held, cfg, teacher=pair[1], progress=False)
    assert len(res.feature_points) == 2
    assert [o.name for o in res.proto.graph.output] == [o.name for o in pair[0].graph.output]
    assert res.best_epoch == 1 and res.best_held_out > res.initial_held_out
    with pytest.raises(Exception, match="feature"):
        FinetuneConfig(feature_points=-1)
