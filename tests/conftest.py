"""Shared helpers for the engine tests: small torch nets exported to ONNX, ORT runs, oracle checks."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from agmc_onnx.analysis import Analysis, analyze
from agmc_onnx.cost import count_macs
from agmc_onnx.model import load
from agmc_onnx.plan import Plan
from agmc_onnx.runtime import session
from agmc_onnx.surgery import mask, prune


def export(module: nn.Module, shape: tuple[int, ...], path: Path, keep_bn: bool = True, opset: int = 13) -> Path:
    """Export with the TorchScript exporter, dynamic batch; keep_bn=False folds BN into the convs."""
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():  # random BN statistics so BN is not the identity
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    x = torch.randn(1, *shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
            output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
            do_constant_folding=not keep_bn,
        )  # fmt: skip
    return path


def feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float inputs for every graph input (symbolic dims get `batch`)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model in ONNX Runtime (CPU)."""
    return session(model).run(None, inputs)


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest absolute difference over paired outputs."""
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def check_plan(analysis: Analysis, plan: Plan, tol: float = 1e-4) -> onnx.ModelProto:
    """Oracles 2 and 3 for one plan; returns the pruned model."""
    pruned = prune(analysis, plan)
    onnx.checker.check_model(pruned, full_check=True)
    x = feeds(analysis.model.proto)
    assert max_diff(run(pruned, x), run(mask(analysis, plan), x)) <= tol
    assert count_macs(pruned) == analysis.cost.plan_macs(plan)
    if analysis.cost.counts_exact:
        assert count_macs(pruned) == analysis.cost.macs(plan.keep_counts())
    return pruned


def random_plan(analysis: Analysis, seed: int = 0, low: float = 0.2) -> Plan:
    """A plan keeping a random subset (never empty) of every prunable group."""
    rng = np.random.default_rng(seed)
    kept = {}
    for g in analysis.prunable_groups():
        k = max(1, int(round(rng.uniform(low, 1.0) * g.size)))
        kept[g.id] = sorted(int(i) for i in rng.choice(g.size, size=k, replace=False))
    return Plan(kept)


class Residual(nn.Module):
    """ResNet-style: stem, two basic blocks (one with a 1x1 projection), GAP, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.a1 = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.a2 = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.b1 = nn.Sequential(nn.Conv2d(8, 10, 3, stride=2, padding=1), nn.BatchNorm2d(10), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(10, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.proj = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two residual blocks."""
        x = self.stem(x)
        x = torch.relu(x + self.a2(self.a1(x)))
        x = torch.relu(self.proj(x) + self.b2(self.b1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class DepthwiseSE(nn.Module):
    """MobileNet-style: expand, depthwise (multiplier 1 and 2), SE gate, project; Hardswish and PReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 12, 1), nn.BatchNorm2d(12), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12), nn.PReLU(12))
        self.se1, self.se2 = nn.Conv2d(12, 4, 1), nn.Conv2d(4, 12, 1)
        self.dw2 = nn.Conv2d(12, 24, 3, padding=1, groups=12)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inverted residual with SE; the head output is the (frozen) model output."""
        y = self.dw(self.expand(x))
        g = torch.sigmoid(self.se2(torch.relu(self.se1(nn.functional.adaptive_avg_pool2d(y, 1)))))
        y = y * g
        y = y * torch.sigmoid(y)  # swish
        return self.head(self.project(self.dw2(y))).mean((2, 3))


class DenseConcat(nn.Module):
    """DenseNet-style: each layer's input is the concat of all earlier outputs; Split and Slice on channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.l1 = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(14), nn.ReLU(), nn.Conv2d(14, 6, 3, padding=1))
        self.t = nn.Conv2d(20, 12, 1)
        self.c1, self.c2 = nn.Conv2d(5, 4, 1), nn.Conv2d(7, 4, 1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two dense layers, transition, channel split and slice, concat, classifier."""
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        x = nn.functional.max_pool2d(self.t(x), 2)
        a, b = torch.split(x, [5, 7], dim=1)
        y = torch.cat([self.c1(a), self.c2(b), x[:, 2:6]], 1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class Grouped(nn.Module):
    """ResNeXt-style grouped conv (4 groups) and a grouped transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.g = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, groups=4), nn.BatchNorm2d(24), nn.ReLU())
        self.up = nn.ConvTranspose2d(24, 12, 2, stride=2)
        self.up2 = nn.ConvTranspose2d(12, 8, 2, stride=2, groups=4)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped conv, two transposed convs, 1x1 head."""
        return self.out(torch.relu(self.up2(torch.relu(self.up(self.g(self.c1(x)))))))


class FlattenLinear(nn.Module):
    """VGG-style: convs, flatten of a 4x4 map into Linear (Gemm), hidden Linear, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(12 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features, flatten via view (Reshape), classifier."""
        x = self.f(x)
        return self.fc2(nn.functional.dropout(torch.relu(self.fc1(x.flatten(1))), 0.5, False))


class Shuffle(nn.Module):
    """ShuffleNet-style channel shuffle (Reshape-Transpose-Reshape) between prunable convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 6, 1)
        self.d = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """a -> b -> shuffle -> c -> d."""
        y = self.b(torch.relu(self.a(x)))
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.d(torch.relu(self.c(y)))


NETS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "residual": (Residual, (3, 16, 16)),
    "dwse": (DepthwiseSE, (3, 12, 12)),
    "dense": (DenseConcat, (3, 16, 16)),
    "grouped": (Grouped, (3, 8, 8)),
    "flatten": (FlattenLinear, (1, 16, 16)),
    "shuffle": (Shuffle, (3, 8, 8)),
}


@pytest.fixture(scope="session")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test net exported twice: NAME (BN kept) and NAME.folded (BN folded into convs)."""
    d = tmp_path_factory.mktemp("nets")
    out = {}
    for name, (cls, shape) in NETS.items():
        torch.manual_seed(0)
        out[name] = export(cls(), shape, d / f"{name}.onnx", keep_bn=True)
        torch.manual_seed(0)
        out[f"{name}.folded"] = export(cls(), shape, d / f"{name}.folded.onnx", keep_bn=False)
    return out


@pytest.fixture(scope="session")
def analyses(nets: dict[str, Path]) -> dict[str, Analysis]:
    """Analysis of every test net."""
    return {k: analyze(load(p)) for k, p in nets.items()}


def helper_model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int = 13) -> onnx.ModelProto:
    """A checked model built with onnx.helper."""
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model)
    return model
