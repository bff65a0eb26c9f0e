"""Run reports and CI gates: each gate fails when it should and passes when it should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx import bench, report
from agmc_onnx.errors import InputError
from agmc_onnx.report import GateError, Gates


def _latency(orig_ms: dict[int, float], final_ms: dict[int, float], final: str = "pruned") -> dict:
    """A bench JSON with the original and `final` at the given median latencies."""
    timings = []
    for batch in orig_ms:
        timings.append(bench.ModelTiming("original", batch, bench.Stats.of([orig_ms[batch]])))
        timings.append(bench.ModelTiming(final, batch, bench.Stats.of([final_ms[batch]])))
    return bench.BenchResult(["original", final], list(orig_ms), "cpu", 1, 1, 1, timings).to_json()


def _models(orig_acc: float | None = 0.92, final_acc: float | None = 0.91, final: str = "pruned") -> dict:
    """Stage facts: original 1000 MACs, the final model 500."""
    return {
        "original": {"path": "a.onnx", "macs": 1000, "params": 100, "file_bytes": 4000, "accuracy": orig_acc},
        final: {"path": "b.onnx", "macs": 500, "params": 50, "file_bytes": 2000, "accuracy": final_acc},
    }


def _report(gates: Gates, latency: dict | None = None, **models_kw: object) -> dict:
    """A prune report with fixed figures and the given gates."""
    final = str(models_kw.get("final", "pruned"))
    lat = latency if latency is not None else _latency({1: 2.0, 64: 40.0}, {1: 1.25, 64: 20.0}, final)
    return report.build("prune", _models(**models_kw), latency=lat, gates=gates, command="agmc-onnx prune x")


@pytest.mark.parametrize(
    ("gates", "fails"),
    [
        (Gates(min_accuracy=91.0), False),
        (Gates(min_accuracy=91.5), True),
        (Gates(max_accuracy_drop=1.0), False),
        (Gates(max_accuracy_drop=0.5), True),
        (Gates(min_speedup=1.6), False),  # 1.6x at batch 1, 2.0x at batch 64
        (Gates(min_speedup=1.8), True),  # batch 1 falls short
        (Gates(max_latency_ms=20.0), False),
        (Gates(max_latency_ms=19.9), True),
    ],
)
def test_each_gate(gates: Gates, fails: bool) -> None:
    """Thresholds on either side of the measured figure."""
    failed = _report(gates)["gates"]["failed"]
    assert bool(failed) is fails, failed
    assert all("\n" not in f for f in failed)


def test_speedup_gate_names_the_batch() -> None:
    """The failing line says which batch size missed and by how much."""
    (line,) = _report(Gates(min_speedup=1.8))["gates"]["failed"]
    assert line == "min-speedup: 1.60x at batch 1 < 1.8x"


def test_accuracy_drop_uses_the_finetuned_model() -> None:
    """With a fine-tuned stage, the drop is original -> fine-tuned."""
    rep = _report(Gates(max_accuracy_drop=0.5), final="finetuned", final_acc=0.918)
    assert rep["gates"]["passed"]
    assert rep["accuracy_drop_points"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("gates", "missing"),
    [
        (Gates(min_accuracy=50), "no pruned test accuracy"),
        (Gates(max_accuracy_drop=1), "both needed"),
        (Gates(min_speedup=1.1), "no latency"),
        (Gates(max_latency_ms=100), "no latency"),
    ],
)
def test_unmeasured_figure_fails_its_gate(gates: Gates, missing: str) -> None:
    """A gate whose figure was never measured fails (a CI gate must not pass by default)."""
    rep = report.build("prune", _models(None, None), latency=None, gates=gates, command="c")
    assert len(rep["gates"]["failed"]) == 1 and missing in rep["gates"]["failed"][0]


def test_no_gates_pass() -> None:
    """Without thresholds nothing fails."""
    rep = _report(Gates())
    assert rep["gates"] == {"thresholds": {}, "failed": [], "passed": True}
    report.enforce(rep)


def test_enforce_raises_one_line_exit_1() -> None:
    """Two failed gates: GateError, exit code 1, one line naming both."""
    rep = _report(Gates(min_accuracy=95, max_latency_ms=1.0))
    with pytest.raises(GateError) as info:
        report.enforce(rep)
    assert info.value.exit_code == 1
    text = str(info.value)
    assert "\n" not in text and "min-accuracy" in text and "max-latency-ms" in text


@pytest.mark.parametrize("kwargs", [{"min_accuracy": 0.9}, {"min_accuracy": 101}, {"max_accuracy_drop": -1},
                                    {"min_speedup": 0}])  # fmt: skip
def test_bad_gate_values_are_input_errors(kwargs: dict) -> None:
    """A fraction for a percentage, negative or zero thresholds: exit code 2."""
    with pytest.raises(InputError):
        Gates(**kwargs)


def test_report_fields_and_files(tmp_path: Path) -> None:
    """JSON and markdown are written side by side with versions, ratios and the command."""
    rep = _report(Gates(min_speedup=1.8))
    assert rep["macs_ratio"] == 0.5 and rep["params_ratio"] == 0.5
    assert rep["speedup"] == {"1": 1.6, "64": 2.0}
    assert set(rep["versions"]) >= {"agmc-onnx", "onnx", "onnxruntime", "torch"}
    jp, mp = report.write(rep, tmp_path / "run.json")
    assert mp == tmp_path / "run.md"
    assert json.loads(jp.read_text())["models"]["pruned"]["macs"] == 500
    md = mp.read_text()
    assert "`agmc-onnx prune x`" in md and "| pruned | 91.00% | 500 |" in md and "FAILED min-speedup" in md


def test_model_facts_counts_from_the_file(tmp_path: Path) -> None:
    """MACs and params come from the written file; size from disk."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], name="fc", transB=1)],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 16)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    facts = report.model_facts(path, accuracy=0.5)
    assert facts["macs"] == 64 and facts["params"] == 68 and facts["accuracy"] == 0.5
    assert facts["file_bytes"] == path.stat().st_size


def test_model_facts_counts_weights_in_constant_nodes() -> None:
    """Paddle2ONNX keeps every weight in a Constant node: they are params too (params_ratio was None)."""
    w = numpy_helper.from_array(np.ones((4, 16), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("Gemm", ["input", "w"], ["logits"], transB=1)],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
    )  # fmt: skip
    facts = report.model_facts(graph_model(graph))
    assert facts["macs"] == 64 and facts["params"] == 64
    assert report.model_facts(graph_model(graph), counts=(7, 9))["macs"] == 7  # counted already: taken as given


def graph_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model around `graph` at opset 13."""
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_missing_ratio_is_never_formatted() -> None:
    """An original with no counted params gives params_ratio None: the markdown leaves it out, no TypeError."""
    facts = {"path": None, "macs": 100, "file_bytes": 10, "accuracy": None}
    rep = report.build("prune", {"original": {**facts, "params": 0}, "pruned": {**facts, "macs": 50, "params": 0}},
                       command="agmc-onnx prune x")  # fmt: skip
    assert rep["macs_ratio"] == 0.5 and rep["params_ratio"] is None
    md = report.render_markdown(rep)
    assert "MACs kept: 50.0%" in md and "params kept" not in md


@pytest.mark.parametrize(("speedup", "warns"), [(1.1, True), (1.9, False)])
def test_shortfall_warning_names_costly_layers(speedup: float, warns: bool) -> None:
    """A 50%-MACs model at 1.1x warns and names the top layers; at 1.9x it does not."""
    msg = report.shortfall_warning(speedup, 0.5, 64, [("conv3", "Conv", 0.4), ("conv1", "Conv", 0.2)])
    assert (msg is not None) is warns
    if msg:
        assert "2.00x" in msg and "conv3 (Conv, 40%)" in msg


def test_prune_command_records_latency_report_and_gates(tmp_path: Path) -> None:
    """`prune` measures original vs pruned, writes the run report; gates pass, fail (exit 1) or need --data."""
    from click.testing import CliRunner

    from agmc_onnx.cli import main
    from fixtures import engine_nets

    src = engine_nets.export_net("vgg_bn", tmp_path, "bn")
    out, rep = tmp_path / "p.onnx", tmp_path / "p.json"
    base = ["prune", str(src), "--target-flops", "0.6", "--strategy", "l1-global", "-o", str(out), "--report",
            str(rep), "--bench-repeats", "2", "--bench-batch", "1,2"]  # fmt: skip
    ok = CliRunner().invoke(main, [*base, "--max-latency-ms", "100000"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(rep.read_text())
    assert doc["gates"]["passed"] and set(doc["speedup"]) == {"1", "2"}
    assert doc["models"]["pruned"]["macs"] < doc["models"]["original"]["macs"] and "groups" in doc
    assert rep.with_suffix(".md").read_text().startswith("# agmc-onnx prune report")
    failed = CliRunner().invoke(main, [*base, "--max-latency-ms", "0.000001"])  # measured, and not met
    assert failed.exit_code == 1
    lines = [ln for ln in failed.stderr.splitlines() if ln.startswith("agmc-onnx: error")]
    assert len(lines) == 1 and lines[0].startswith("agmc-onnx: error: gate failed: max-latency-ms: median "), lines
    # a gate that cannot be measured without --data is refused up front (issue 17), not failed at the end
    unmeasurable = CliRunner().invoke(main, [*base, "--min-accuracy", "50"])
    assert unmeasurable.exit_code == 2
    lines = [ln for ln in unmeasurable.stderr.splitlines() if ln.startswith("agmc-onnx: error")]
    assert lines == ["agmc-onnx: error: --min-accuracy needs --data (a test split to measure the accuracy on)"]
    needs_data = CliRunner().invoke(main, [*base, "--finetune-epochs", "1"])
    assert needs_data.exit_code == 2 and "--finetune-epochs needs --data" in needs_data.stderr
