"""Real architectures (torchvision, random weights) and the engine fixture nets, pruned to 0.5 MACs.

Each must either meet the target within 2% with oracles 1-3 holding, or freeze what it cannot prune
(with a reason) and still satisfy the oracles.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from fixtures import engine_nets
from tests.helpers_onnx import (
    check_oracles,
    export_torch,
    max_rel_diff,
    random_feeds,
    reference_macs,
    run,
    sha256,
)

TARGET = 0.5
TOLERANCE = 0.02


@dataclass(frozen=True)
class Arch:
    """A torchvision model as the tests export it."""

    build: Callable[[], nn.Module]
    size: int = 64
    opset: int = 13
    slow: bool = True


def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    """A torchvision builder with random weights (weights=None: nothing is downloaded)."""

    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None, **kwargs)

    return build


def _vgg11_bn_small() -> nn.Module:
    """vgg11_bn at 64x64: the 7x7 adaptive pool cannot be exported from a 2x2 map, so the classifier reads 2x2."""
    import torchvision.models as tvm

    model = tvm.vgg11_bn(weights=None)
    model.avgpool = nn.Identity()
    model.classifier[0] = nn.Linear(512 * 2 * 2, 4096)
    return model


ARCHS: dict[str, Arch] = {
    "resnet18": Arch(_tv("resnet18"), slow=False),
    "mobilenet_v2": Arch(_tv("mobilenet_v2"), slow=False),
    "squeezenet1_1": Arch(_tv("squeezenet1_1"), slow=False),
    "shufflenet_v2_x1_0": Arch(_tv("shufflenet_v2_x1_0"), slow=False),
    "resnet50": Arch(_tv("resnet50")),
    "resnext50_32x4d": Arch(_tv("resnext50_32x4d")),
    "mobilenet_v3_small": Arch(_tv("mobilenet_v3_small")),
    "efficientnet_b0": Arch(_tv("efficientnet_b0")),
    "densenet121": Arch(_tv("densenet121")),
    "regnet_y_400mf": Arch(_tv("regnet_y_400mf")),
    "googlenet": Arch(_tv("googlenet", aux_logits=False, init_weights=True)),
    "inception_v3": Arch(_tv("inception_v3", aux_logits=False, init_weights=True), size=299),
    "vgg11_bn": Arch(_vgg11_bn_small),
    "mnasnet1_0": Arch(_tv("mnasnet1_0")),
    "convnext_tiny": Arch(_tv("convnext_tiny")),
    "vit_b_32": Arch(_tv("vit_b_32", image_size=64), opset=14),
}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial scale, shift and statistics (fresh torchvision BNs are identities)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                engine_nets.randomize_bn_(m, gen)
    return model.eval()


def export_arch(name: str, out: Path, fold: bool = True) -> Path:
    """Export a torchvision model of ARCHS with seeded random weights (exporter chatter silenced)."""
    arch = ARCHS[name]
    torch.manual_seed(0)
    model = randomize_bn(arch.build())
    path = out / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_torch(model, (3, arch.size, arch.size), path, fold=fold, opset=arch.opset)
    return path


def uniform_plan(analysis: Any, target: float, round_to: int) -> Any:
    """The uniform strategy's plan for a MACs target."""
    from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext

    ctx = StrategyContext(analysis=analysis, budget=Budget(flops=target), round_to=round_to)
    return REGISTRY["uniform"]().propose(ctx)


def prune_and_check(path: Path, strategy: str = "uniform", target: float = TARGET, round_to: int = 8) -> dict[str, Any]:
    """Analyse, plan with `strategy`, hold the oracles; return what happened (ratio, frozen groups, timings)."""
    from agmc_onnx.analysis import analyze
    from agmc_onnx.errors import InputError
    from agmc_onnx.model import load
    from agmc_onnx.plan import plan_from_ratios
    from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext

    t0 = time.perf_counter()
    analysis = analyze(load(path))
    t1 = time.perf_counter()
    ctx = StrategyContext(analysis=analysis, budget=Budget(flops=target), round_to=round_to)
    frozen = [g for g in analysis.groups if not g.prunable]
    refused = None
    try:
        plan = REGISTRY[strategy]().propose(ctx)
    except InputError as exc:  # only acceptable when frozen groups make the target impossible
        refused = str(exc)
        assert frozen and ("nothing prunable" in refused or "unreachable" in refused), refused
        prunable = {g.id: 0.5 for g in analysis.groups if g.prunable}
        plan = plan_from_ratios(analysis, prunable, round_to=round_to)  # still hold the oracles on what can go
    t2 = time.perf_counter()
    for g in frozen:
        assert g.frozen_reason, f"group {g.id} is frozen without a reason"
        assert len(plan.kept.get(g.id, range(g.size))) == g.size, f"frozen group {g.id} was pruned"
    facts = check_oracles(path, plan, analysis)
    facts.update(
        groups=len(analysis.groups),
        frozen=len(frozen),
        frozen_channels=sum(g.size for g in frozen),
        channels=sum(g.size for g in analysis.groups),
        reasons=sorted({str(g.frozen_reason) for g in frozen}),
        refused=refused,
        analyze_s=t1 - t0,
        plan_s=t2 - t1,
    )
    facts["meets"] = abs(facts["ratio"] - target) <= TOLERANCE
    return facts


def _assert_outcome(facts: dict[str, Any]) -> None:
    """Met within 2%, or missed it only because some groups are frozen (and said why)."""
    structural = [r for r in facts["reasons"] if not r.startswith(("graph output", "graph input"))]
    if not facts["meets"]:
        assert structural, f"missed the target ({facts['ratio']:.3f}) with nothing frozen but the graph's ends"
        assert facts["ratio"] > TARGET, f"overshot the target: {facts['ratio']:.3f}"
    if facts["refused"]:
        assert structural and not facts["meets"]


# Models whose run exposes an open engine bug; each has a failing test in tests/test_pending_engine_bug_*.py
# (uncommitted) and the entry goes when the bug is fixed. vit_b_32 was here until c7f9d77.
PENDING_ENGINE_BUGS: dict[str, str] = {}


def _arch_params() -> list[Any]:
    """Parameters for the torchvision test, slow ones marked."""
    return [
        pytest.param(n, marks=[pytest.mark.slow] if a.slow else [])
        for n, a in ARCHS.items()
        if n not in PENDING_ENGINE_BUGS
    ]


@pytest.mark.parametrize("name", _arch_params())
def test_torchvision_uniform_half(tmp_path: Path, name: str) -> None:
    """Uniform at 0.5 MACs: the target within 2% or frozen-with-reason, and oracles 1-3 everywhere."""
    facts = prune_and_check(export_arch(name, tmp_path))
    _assert_outcome(facts)


# ---------------------------------------------------------------------------------------------------
# Engine fixture nets: tiny, every engine strategy, BN kept and folded.


@pytest.fixture(scope="module")
def fixture_nets(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """All fixture nets of fixtures/engine_nets.py, exported once for this module."""
    out = tmp_path_factory.mktemp("engine_nets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return engine_nets.export_all(out)


ENGINE_STRATEGIES = ("uniform", "l1-global")


@pytest.mark.parametrize("variant", engine_nets.VARIANTS)
@pytest.mark.parametrize("net", list(engine_nets.NETS))
@pytest.mark.parametrize("strategy", ENGINE_STRATEGIES)
def test_fixture_net(fixture_nets: dict[tuple[str, str], Path], net: str, variant: str, strategy: str) -> None:
    """Every fixture net meets 0.5 within 2% (nothing in them needs freezing) with oracles 1-3."""
    facts = prune_and_check(fixture_nets[(net, variant)], strategy=strategy, round_to=1)
    assert facts["meets"], f"{net}.{variant} {strategy}: ratio {facts['ratio']:.4f}, frozen {facts['reasons']}"
    if strategy == "uniform":
        assert abs(facts["ratio"] - TARGET) <= 0.01, f"uniform misses 1%: {facts['ratio']:.4f}"


def _mask_from_report(original: onnx.ModelProto, report: dict[str, Any]) -> onnx.ModelProto:
    """The ORIGINAL file with every consumer position of a removed channel zeroed, from the report alone."""
    masked = onnx.ModelProto()
    masked.CopyFrom(original)
    inits = {t.name: t for t in masked.graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    for group in report["groups"]:
        kept = set(group["kept"])
        for m in group["members"]:
            if m["role"] != "consumer":
                continue
            assert m["tensor"] in inits, f"report names {m['tensor']}, not an initializer of the file"
            arr = arrays.setdefault(m["tensor"], numpy_helper.to_array(inits[m["tensor"]]).copy())
            drop = [p for p, c in zip(m["positions"], m["channels"], strict=True) if c not in kept]
            index: list[Any] = [slice(None)] * arr.ndim
            index[m["axis"]] = drop
            arr[tuple(index)] = 0
    for name, arr in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return masked


CLI_NETS = [("resnet20", "bn"), ("densenet", "folded"), ("se", "bn"), ("flatten_gemm", "folded"), ("vgg_bn", "bn")]


@pytest.mark.parametrize(("net", "variant"), CLI_NETS)
def test_fixture_net_cli_report(tmp_path: Path, fixture_nets: dict[tuple[str, str], Path], net: str, variant: str) -> None:
    """CLI prune + report: the report's kept indices, applied as a mask to the original file, give the pruned outputs;
    the report's MACs equal the file's; replaying the report with --strategy plan writes the same weights."""
    from click.testing import CliRunner

    from agmc_onnx.cli import main

    src = fixture_nets[(net, variant)]
    before = sha256(src)
    out, rep, out2 = tmp_path / "a.onnx", tmp_path / "r.json", tmp_path / "b.onnx"
    common = ["--round-to", "2"]
    res = CliRunner().invoke(main, ["prune", str(src), "--target-flops", "0.5", "--strategy", "l1-global",
                                    "-o", str(out), "--report", str(rep), *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    original = onnx.load(str(src))
    feeds = random_feeds(original, batch=3, seed=7)
    diff = max_rel_diff(run(pruned, feeds), run(_mask_from_report(original, report), feeds))
    assert diff <= 1e-4, f"pruned != original masked from the report: {diff:.3g}"
    counted = reference_macs(pruned)
    assert report["after"]["macs"] == report["after"]["macs_predicted"] == counted
    assert report["before"]["macs"] == reference_macs(original)
    assert abs(report["macs_ratio"] - 0.5) <= TOLERANCE
    res = CliRunner().invoke(main, ["prune", str(src), "--strategy", "plan", "--plan", str(rep), "-o", str(out2), *common])
    assert res.exit_code == 0, res.output
    replay = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out2)).graph.initializer}
    first = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert replay.keys() == first.keys() and all(np.array_equal(replay[k], first[k]) for k in first)
    assert sha256(src) == before
