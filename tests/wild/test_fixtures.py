"""Every file from the wild (fixtures/wild.py) at 0.5 of MACs: the target met within 2% with the oracles
holding (at two input sizes when the input size is dynamic), or what cannot be pruned frozen with a reason;
and `agmc-onnx prune --target-flops 0.5` with default flags (bench included) exits 0, its file passes the
full checker and runs in ONNX Runtime at the original's sizes, and its report's figures agree everywhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from agmc_onnx.analysis import analyze
from agmc_onnx.cli import main
from agmc_onnx.errors import InputError
from agmc_onnx.model import load
from agmc_onnx.workflows.engine import prune_model
from tests.helpers_onnx import check_oracles, random_feeds, run
from tests.wild.conftest import SPECS, fixture_params

TARGET, TOLERANCE = 0.5, 0.02


def _flag(name: str) -> list[str]:
    """The --input-shape a fixture needs (none for static files and files that record their size)."""
    given = SPECS[name].given
    return [] if given is None else ["--input-shape", ",".join(map(str, given))]


@pytest.mark.parametrize("name", fixture_params())
def test_prunes_to_half_with_the_oracles(name: str, wild_file: Callable[[str], Path]) -> None:
    """The default strategy at 0.5: within 2% of it, or short of it for a stated reason; oracles 1-3."""
    spec, path = SPECS[name], wild_file(name)
    analysis = analyze(load(path, input_shapes=None if spec.given is None else {"": spec.given}))
    for g in analysis.groups:
        assert g.prunable or g.frozen_reason or g.size == 1, f"group {g.id} frozen without a reason"
    target = TARGET
    if spec.unreachable:
        with pytest.raises(InputError, match=spec.unreachable):
            prune_model(path, TARGET, analysis=analysis)
        assert any(not g.prunable for g in analysis.groups)
        target = 0.7
    plan = prune_model(path, target, analysis=analysis).plan
    ratio = analysis.cost.plan_macs(plan) / analysis.cost.total_macs
    if spec.short:
        assert ratio > target + TOLERANCE and any(spec.short in r for _, r in analysis.frozen)
    else:
        assert abs(ratio - target) <= TOLERANCE, f"{ratio:.4f} of MACs for a target of {target}"
    inp = next(iter(analysis.model.input_shapes.dims))
    sizes = [{inp: s} for s in spec.sizes] or None
    check_oracles(path, plan, analysis, batch=spec.batch, tol=spec.tol, sizes=sizes, floor=spec.floor)


@pytest.mark.parametrize("name", fixture_params())
def test_prune_command_with_default_flags(name: str, wild_file: Callable[[str], Path], tmp_path: Path) -> None:
    """`agmc-onnx prune FILE --target-flops 0.5` (bench on): exit 0, a valid file that runs at the original's
    sizes, and one set of figures in the terminal table, the JSON and the markdown."""
    spec, path = SPECS[name], wild_file(name)
    out = tmp_path / "pruned.onnx"
    target = "0.7" if spec.unreachable else "0.5"
    r = CliRunner().invoke(main, ["prune", str(path), "--target-flops", target, "-o", str(out), *_flag(name)])
    assert r.exit_code == 0, r.output
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    original = onnx.load(str(path))
    inp = next(i.name for i in written.graph.input)
    for size in spec.sizes or [None]:
        feeds = random_feeds(original, batch=1, sizes=None if size is None else {inp: size})
        got, want = run(written, feeds), run(original, feeds)
        assert [g.shape for g in got] == [w.shape for w in want]
    rep = json.loads(out.with_name("pruned.report.json").read_text())
    md = out.with_name("pruned.report.md").read_text()
    o, p = rep["models"]["original"], rep["models"]["pruned"]
    assert rep["before"]["macs"] == o["macs"] and rep["after"]["macs"] == p["macs"]
    assert rep["macs_ratio"] == p["macs"] / o["macs"] and rep["params_ratio"] == p["params"] / o["params"]
    for figure in (o["macs"], p["macs"], o["params"], p["params"]):
        assert f"{figure:,}" in r.output and f"{figure:,}" in md
    assert f"MACs kept: {100 * rep['macs_ratio']:.1f}%" in md
