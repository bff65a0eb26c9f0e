"""Latency bench: interleaving and statistics on a fake timer, output schema on real tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from agmc_onnx import bench
from agmc_onnx.cli import main
from agmc_onnx.errors import InputError


class FakeClock:
    """A clock that only moves when a fake runner 'runs' for its scripted cost."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[int] = []

    def timer(self) -> float:
        """The current fake time in seconds."""
        return self.now

    def runner(self, index: int, costs_ms: list[float]):
        """A runner that records its index and advances the clock by its next cost."""
        it = iter(costs_ms)

        def run() -> None:
            self.calls.append(index)
            self.now += next(it) / 1000.0

        return run


def test_measure_interleaves_and_rotates_the_start() -> None:
    """After the warm-up, round r starts at runner r mod n; each sample is that runner's own cost."""
    clock = FakeClock()
    costs = [[100.0] * 2 + [1.0, 2.0, 3.0], [100.0] * 2 + [10.0, 20.0, 30.0], [100.0] * 2 + [5.0, 5.0, 5.0]]
    runners = [clock.runner(i, c) for i, c in enumerate(costs)]
    samples = bench.measure(runners, warmup=2, repeats=3, timer=clock.timer)
    assert clock.calls[:6] == [0, 1, 2, 0, 1, 2]  # warm-up, not timed
    assert clock.calls[6:] == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert samples[0] == pytest.approx([1.0, 2.0, 3.0])
    assert samples[1] == pytest.approx([10.0, 20.0, 30.0])
    assert samples[2] == pytest.approx([5.0, 5.0, 5.0])


def test_measure_sessions_keeps_each_models_fastest_session() -> None:
    """A session stuck 3x slower (seen on ResNet-56 in ORT) does not decide its model's figure; all run interleaved."""
    clock = FakeClock()
    slow, fast, other = ([6.0] * 4, [2.0, 2.1, 1.9, 2.0], [1.0] * 4)
    groups = [[clock.runner(0, slow), clock.runner(1, fast)], [clock.runner(2, other)]]
    samples = bench.measure_sessions(groups, warmup=1, repeats=3, timer=clock.timer)
    assert samples[0] == pytest.approx([2.1, 1.9, 2.0]) and samples[1] == pytest.approx([1.0] * 3)
    assert clock.calls[3:6] == [0, 1, 2]  # one interleaved round over every session of every model
    with pytest.raises(InputError):
        bench.measure_sessions([[clock.runner(0, fast)], []])


def test_measure_rejects_zero_repeats() -> None:
    """At least one timed run is needed."""
    with pytest.raises(InputError):
        bench.measure([lambda: None], repeats=0)


def test_stats_median_and_p90() -> None:
    """Median and p90 (linear interpolation) of 1..10 ms."""
    s = bench.Stats.of([float(v) for v in range(10, 0, -1)])
    assert (s.median_ms, s.p90_ms, s.min_ms, s.max_ms, s.samples) == (5.5, pytest.approx(9.1), 1.0, 10.0, 10)
    with pytest.raises(ValueError):
        bench.Stats.of([])


def test_speedup_and_json_from_timings() -> None:
    """Speed-up = baseline median / model median, per batch; JSON carries every row."""
    t = [
        bench.ModelTiming("a", 1, bench.Stats.of([4.0, 4.0, 4.0])),
        bench.ModelTiming("b", 1, bench.Stats.of([2.0, 2.0, 1.0])),
        bench.ModelTiming("a", 64, bench.Stats.of([30.0])),
        bench.ModelTiming("b", 64, bench.Stats.of([40.0])),
    ]
    result = bench.BenchResult(["a", "b"], [1, 64], "cpu", 2, 1, 3, t)
    assert result.speedup("b", 1) == pytest.approx(2.0)
    assert result.speedup(1, 64) == pytest.approx(0.75)
    doc = result.to_json()
    assert doc["baseline"] == "a"
    assert [(r["model"], r["batch"], r["speedup"]) for r in doc["results"]] == [
        ("a", 1, 1.0),
        ("b", 1, 2.0),
        ("a", 64, 1.0),
        ("b", 64, 0.75),
    ]
    assert bench.format_table(result)[2] == ["b", "1", "2.000", "2.000", "2.00x"]


def _mlp(width: int, path: Path | None = None, fixed_c: bool = True) -> onnx.ModelProto:
    """input[N,32] -> Gemm(width) -> Relu -> Gemm(4): a model the bench can run."""
    rng = np.random.default_rng(width)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 32 if fixed_c else "C"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(width, 32)).astype(np.float32), "w1"),
            numpy_helper.from_array(np.zeros(width, np.float32), "b1"),
            numpy_helper.from_array(rng.normal(size=(4, width)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if path is not None:
        onnx.save(model, str(path))
    return model


def test_make_inputs_sets_batch_and_rejects_symbolic_axes() -> None:
    """Inputs get the requested batch; a symbolic non-batch axis is an input error."""
    assert bench.make_inputs(_mlp(8), 5)["input"].shape == (5, 32)
    with pytest.raises(InputError, match="--input-shape"):
        bench.make_inputs(_mlp(8, fixed_c=False), 1)


def test_bench_real_models_schema(tmp_path: Path) -> None:
    """Two real models at two batch sizes: every (model, batch) row with the requested sample count."""
    a, b = _mlp(64, tmp_path / "a.onnx"), tmp_path / "b.onnx"
    _mlp(16, b)
    result = bench.bench([a, b], batches=[1, 3], threads=1, warmup=1, repeats=4)
    assert result.models == ["model0", "b.onnx"]
    assert [(t.model, t.batch, t.stats.samples) for t in result.timings] == [
        ("model0", 1, 4),
        ("b.onnx", 1, 4),
        ("model0", 3, 4),
        ("b.onnx", 3, 4),
    ]
    assert all(
        t.stats.min_ms <= t.stats.median_ms <= t.stats.p90_ms <= t.stats.max_ms for t in result.timings
    )
    assert result.speedup("model0", 3) == 1.0


def test_bench_same_file_twice_gets_unique_labels(tmp_path: Path) -> None:
    """Comparing a file with itself keeps both rows apart."""
    path = tmp_path / "m.onnx"
    _mlp(8, path)
    assert bench.bench([path, path], repeats=1, warmup=0).models == ["m.onnx", "m.onnx#2"]


def test_parse_profile_maps_and_sorts() -> None:
    """Kernel events are summed per node, mapped back from `_nchwc`/`fused` names, divided by runs."""
    events = [
        {"cat": "Session", "name": "model_run", "dur": 999},
        {"cat": "Node", "name": "conv_out_nchwc_kernel_time", "dur": 300, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "conv_out_nchwc_kernel_time", "dur": 100, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "fused fc_kernel_time", "dur": 100, "args": {"op_name": "Gemm"}},
        {"cat": "Node", "name": "fc_fence_before", "dur": 50, "args": {"op_name": "Gemm"}},
    ]
    costs = bench.parse_profile(events, runs=2, names={"conv_out": "conv1"})
    assert [(c.node, c.op, c.mean_us, c.share) for c in costs] == [
        ("conv1", "Conv", 200.0, 0.8),
        ("fc", "Gemm", 50.0, 0.2),
    ]


def test_profile_real_model_names_nodes() -> None:
    """ORT profiling of a real model names its Gemm nodes."""
    costs = bench.profile(_mlp(32), batch=2, runs=2)
    assert {"fc1", "fc2"} <= {c.node for c in costs}
    assert sum(c.share for c in costs) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("speedup", "macs_ratio", "short"),
    [
        (1.9, 0.5, False),
        (1.4, 0.5, True),
        (0.8, 0.5, True),
        (1.0, 1.0, False),
        (0.9, 1.0, True),
        (1.2, 0.9, False),
    ],
)
def test_speedup_shortfall(speedup: float, macs_ratio: float, short: bool) -> None:
    """Well short of 1/macs_ratio (below 75% of it) or slower than the original is a shortfall."""
    assert bench.speedup_shortfall(speedup, macs_ratio) is short


def test_bench_command_json(tmp_path: Path) -> None:
    """`agmc-onnx bench a --compare b --json` prints the schema with a speed-up per row."""
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    _mlp(64, a)
    _mlp(16, b)
    out = CliRunner().invoke(
        main,
        ["bench", str(a), "--compare", str(b), "--batch", "1,2", "--repeats", "3", "--warmup", "1", "--sessions", "3",
         "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["models"] == ["a.onnx", "b.onnx"] and doc["batches"] == [1, 2] and doc["sessions"] == 3
    assert {"model", "batch", "median_ms", "p90_ms", "speedup"} <= set(doc["results"][0])
    assert len(doc["results"]) == 4


def test_bench_command_table_and_bad_batch(tmp_path: Path) -> None:
    """The table names both models and the speed-up; a bad --batch exits 2 with one line."""
    a = tmp_path / "a.onnx"
    _mlp(8, a)
    out = CliRunner().invoke(main, ["bench", str(a), "--compare", str(a), "--repeats", "2", "--warmup", "0"])
    assert out.exit_code == 0, out.output
    assert "a.onnx#2" in out.output and "speed-up" in out.output
    bad = CliRunner().invoke(main, ["bench", str(a), "--batch", "1,x"])
    assert bad.exit_code == 2


def test_make_inputs_at_the_given_size_never_feeds_initializers() -> None:
    """A dynamic input is fed at --input-shape's size; initializers listed as graph inputs (old IR) are weights."""
    model = _mlp(8, fixed_c=False)
    feeds = bench.make_inputs(model, 3, input_shapes={"input": (1, 32)})
    assert {k: v.shape for k, v in feeds.items()} == {"input": (3, 32)}
    old = _mlp(8)
    old.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in old.graph.initializer)
    assert list(bench.make_inputs(old, 2)) == ["input"]
