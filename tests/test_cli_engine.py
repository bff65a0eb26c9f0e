"""`agmc-onnx inspect` and `agmc-onnx prune` end to end, and the Python API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from agmc_onnx import api
from agmc_onnx.cli import main
from agmc_onnx.cost import count_macs
from tests.conftest import feeds, max_diff, run


@pytest.fixture
def model(nets: dict, tmp_path: Path) -> Path:
    """A private copy of the residual net."""
    dst = tmp_path / "m.onnx"
    shutil.copy(nets["residual"], dst)
    return dst


def test_inspect_table_and_json(model: Path) -> None:
    """inspect prints totals and groups; --json gives the same facts machine-readable."""
    r = CliRunner().invoke(main, ["inspect", str(model)])
    assert r.exit_code == 0, r.output
    assert "MACs" in r.output and "prunable" in r.output and "graph output" in r.output
    r = CliRunner().invoke(main, ["inspect", str(model), "--json"])
    info = json.loads(r.output)
    assert info["macs"] == count_macs(onnx.load(str(model)))
    assert info["prunable_groups"] >= 3 and any(not g["prunable"] and g["frozen_reason"] for g in info["group_table"])


@pytest.mark.parametrize("strategy", ["uniform", "l1-global"])
def test_prune_writes_model_and_report(model: Path, tmp_path: Path, strategy: str) -> None:
    """prune writes a valid smaller model at the target and a report whose kept indices rebuild the mask."""
    before = model.read_bytes()
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["prune", str(model), "--target-flops", "0.5", "--strategy", strategy,
                                  "--round-to", "1", "-o", str(out), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    assert model.read_bytes() == before
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    report = json.loads(rep.read_text())
    total = report["before"]["macs"]
    assert abs(count_macs(pruned) / total - 0.5) <= 0.01
    assert report["after"]["macs"] == report["after"]["macs_predicted"] == count_macs(pruned)
    # oracle 2 from the report alone: zero consumer positions of removed channels in the analysed graph
    analysis = api.analyze(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(analysis.model.proto)
    inits = {t.name: t for t in proto.graph.initializer}
    for g in report["groups"]:
        kept = set(g["kept"])
        for m in g["members"]:
            if m["role"] != "consumer":
                continue
            arr = onnx.numpy_helper.to_array(inits[m["tensor"]]).copy()
            for pos, ch in zip(m["positions"], m["channels"], strict=True):
                if ch not in kept:
                    np.moveaxis(arr, m["axis"], 0)[pos] = 0
            inits[m["tensor"]].CopyFrom(onnx.numpy_helper.from_array(arr, m["tensor"]))
    x = feeds(pruned)
    assert max_diff(run(pruned, x), run(proto, x)) <= 1e-4


def test_default_output_name_and_plan_flag(model: Path, tmp_path: Path) -> None:
    """Without -o the output is MODEL.pruned.onnx; --plan implies the plan strategy."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"1": 0.5}))
    r = CliRunner().invoke(main, ["prune", str(model), "--plan", str(plan), "--round-to", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.pruned.onnx").exists()


def test_api_prune_model(model: Path) -> None:
    """The Python API returns the proto, plan and report without writing anything."""
    res = api.prune_model(model, 0.6, "uniform", round_to=1)
    assert res.output is None and res.plan.kept and res.report["macs_ratio"] == pytest.approx(0.6, abs=0.01)
    assert sorted(p.name for p in model.parent.iterdir()) == ["m.onnx"]


def test_bad_usage_exit_codes(model: Path, tmp_path: Path) -> None:
    """Bad target, unknown strategy, output = input: exit 2, one line, nothing written."""
    cases = [
        ["--target-flops", "2"],
        ["--target-flops", "abc"],
        ["--target-flops", "0.5", "--strategy", "nope"],
        ["--target-flops", "0.5", "-o", str(model)],
        ["--target-flops", "0.5", "--round-to", "zero"],
    ]
    for args in cases:
        r = CliRunner().invoke(main, ["prune", str(model), *args])
        assert r.exit_code == 2, (args, r.output)
        assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
