"""Latency model: tables on a synthetic deterministic timer, interpolation, cache keys, budgets, action wall."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import analyze, prune_model
from agmc_onnx.cost import count_macs
from agmc_onnx.errors import InputError
from agmc_onnx.latency import NodeTable, build_latency_model, layer_specs, verification
from agmc_onnx.plan import ImportanceCache, plan_from_counts, round_count
from agmc_onnx.rl.env import DYN_FEATURES, PruningEnv
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
from agmc_onnx.surgery import prune

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
NS_PER_MAC = 1e-9  # synthetic: 1 ns per MAC, plus a fixed per-run overhead
OVERHEAD_S = 1e-5


class FakeClock:
    """A clock that only moves when a synthetic runner 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def synthetic(clock: FakeClock, calls: list[int] | None = None) -> Callable[[onnx.ModelProto, Any], Callable[[], None]]:
    """Runner factory: a model 'takes' its MACs x 1 ns + 10 us per run (deterministic)."""

    def make(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        if calls is not None:
            calls.append(1)
        cost = count_macs(proto) * NS_PER_MAC + OVERHEAD_S

        def run() -> None:
            clock.now += cost

        return run

    return make


def truth_ms(proto: onnx.ModelProto) -> float:
    """What the synthetic runner measures for a model, in ms."""
    return 1000 * (count_macs(proto) * NS_PER_MAC + OVERHEAD_S)


@pytest.fixture(scope="module")
def r20() -> Analysis:
    return analyze(MODELS / "resnet20.onnx")


@pytest.fixture(scope="module")
def lm20(r20: Analysis, tmp_path_factory: pytest.TempPathFactory) -> Any:
    clock = FakeClock()
    return build_latency_model(r20, 1, round_to=16, cache_dir=tmp_path_factory.mktemp("cache"), timer=clock,
                               runner_factory=synthetic(clock), machine="test-cpu", warmup=1, repeats=3)  # fmt: skip


def random_counts(a: Analysis, rng: np.random.Generator, round_to: int = 16) -> dict[int, int]:
    return {g.id: round_count(rng.uniform(0.05, 1.0) * g.size, g.size, round_to) for g in a.prunable_groups()}


def test_predictor_is_exact_on_a_synthetic_timer(r20: Analysis, lm20: Any) -> None:
    """Per-layer cost ~ C_in * C_out (bilinear): tables + fit must predict every plan exactly."""
    assert lm20.table.scale == pytest.approx(1.0, rel=1e-6)
    assert lm20.table.offset_ms == pytest.approx(1000 * OVERHEAD_S, rel=1e-4)
    assert lm20.predict({}) == pytest.approx(truth_ms(r20.model.proto), rel=1e-6)
    rng = np.random.default_rng(0)
    cache = ImportanceCache(r20)
    for _ in range(4):
        counts = random_counts(r20, rng)
        plan = plan_from_counts(r20, counts, cache)
        assert lm20.predict_plan(plan) == pytest.approx(truth_ms(prune(r20, plan)), rel=1e-6)


@pytest.mark.parametrize("slow_sessions", [1, 3])
def test_calibration_survives_slow_sessions_of_the_original(r20: Analysis, tmp_path: Path, slow_sessions: int) -> None:
    """The original's first session(s) run 30x slow: one slow session is ignored (fastest counts); with
    every session slow the robust line follows the other calibration plans, so predictions stay exact."""
    clock, full, made = FakeClock(), count_macs(r20.model.proto), []
    base = synthetic(clock)

    def make(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        run = base(proto, feeds)
        if count_macs(proto) != full or len(made) >= slow_sessions:
            return run
        made.append(1)

        def slow() -> None:
            for _ in range(30):
                run()

        return slow

    lm = build_latency_model(r20, 1, round_to=16, cache_dir=tmp_path, timer=clock, runner_factory=make,
                             machine="test-cpu", warmup=1, repeats=3)  # fmt: skip
    assert len(made) == slow_sessions
    rng = np.random.default_rng(1)
    slow = 1 if slow_sessions == 1 else 30
    assert lm.table.base_ms == pytest.approx(slow * truth_ms(r20.model.proto), rel=1e-6)
    assert lm.predict({}) == pytest.approx(truth_ms(r20.model.proto), rel=1e-6)
    cache = ImportanceCache(r20)
    for _ in range(3):
        plan = plan_from_counts(r20, random_counts(r20, rng), cache)
        assert lm.predict_plan(plan) == pytest.approx(truth_ms(prune(r20, plan)), rel=1e-6)


def test_robust_line_ignores_one_wild_point_and_falls_back_through_the_origin() -> None:
    from agmc_onnx.latency import _robust_line

    x = np.array([4.0, 2.0, 1.0, 2.5, 3.0, 1.5])
    y = 0.9 * x + 0.1
    y[0] = 30.0  # the original measured in a stuck session
    assert _robust_line(x, y) == pytest.approx((0.9, 0.1))
    assert _robust_line(np.array([1.0, 1.0]), np.array([2.0, 3.0])) == pytest.approx((2.5, 0.0))  # one distinct x
    assert _robust_line(np.array([1.0, 2.0, 3.0]), np.array([1.0, 50.0, 100.0]))[1] == 0.0  # slope 49: rejected


def test_node_table_interpolates_bilinearly_and_clamps() -> None:
    t = NodeTable([16, 32, 64], [16, 48], [[1.0, 3.0], [2.0, 6.0], [4.0, 12.0]])
    assert t.at(32, 48) == 6.0  # grid points exact
    assert t.at(24, 16) == pytest.approx(1.5)  # between input widths
    assert t.at(32, 32) == pytest.approx(4.0)  # between output widths
    assert t.at(48, 32) == pytest.approx(6.0)  # both axes: mean of 4 (in=32) and 8 (in=64)
    assert t.at(8, 8) == 1.0 and t.at(128, 96) == 12.0  # clamped outside the grid
    single = NodeTable([3], [16, 32], [[1.0, 2.0]])
    assert single.at(3, 24) == pytest.approx(1.5)


def test_grid_is_bounded_and_repeated_layers_share_a_table() -> None:
    a = analyze(MODELS / "resnet56.onnx")
    specs, skipped = layer_specs(a, 16, max_points=4)
    configs = {s.config: s for s in specs}
    assert not skipped and len(specs) > 50
    assert len(configs) < len(specs) / 3  # ResNets repeat their layers
    assert all(len(s.grid_in) <= 4 and len(s.grid_out) <= 4 for s in specs)
    for s in specs:  # every grid spans the widths from the rounding minimum to the full layer
        assert s.grid_out[-1] == s.out_len.full() and s.grid_in[-1] == s.in_len.full()
        assert s.grid_out == sorted(set(s.grid_out))


def test_auto_grids_follow_each_groups_step(r20: Analysis, tmp_path: Path) -> None:
    """Under auto:16 the tables measure ResNet-20's 16/32/64-channel axes in steps of 4/8/16; a reload agrees."""
    specs, _ = layer_specs(r20, "auto:16")
    grids = {tuple(s.grid_out) for s in specs} | {tuple(s.grid_in) for s in specs}
    assert {(4, 8, 12, 16), (8, 16, 24, 32), (16, 32, 48, 64)} <= grids
    clock = FakeClock()
    lm = build_latency_model(r20, 1, round_to="auto:16", cache_dir=tmp_path, timer=clock,
                             runner_factory=synthetic(clock), machine="cpu-A", warmup=0, repeats=2)  # fmt: skip
    table = json.loads((tmp_path / f"{lm.table.key}.json").read_text())
    assert table["settings"]["round_to"] == "auto:16"
    from agmc_onnx.latency import LatencyModel, LatencyTable

    again = LatencyModel(r20, LatencyTable.from_json(table))
    keep = {g.id: round_count(0.5 * g.size, g.size, "auto:16") for g in r20.prunable_groups()}
    assert again.predict(keep) == pytest.approx(lm.predict(keep))


def test_cache_hit_key_and_invalidation(r20: Analysis, tmp_path: Path) -> None:
    clock, calls = FakeClock(), []

    def build(**kw: Any) -> Any:
        opts = dict(batch=1, round_to=16, cache_dir=tmp_path, timer=clock, runner_factory=synthetic(clock, calls),
                    machine="cpu-A", warmup=0, repeats=2)  # fmt: skip
        opts.update(kw)
        batch = opts.pop("batch")
        return build_latency_model(r20, batch, **opts)

    first = build()
    n = len(calls)
    assert n > 0 and not first.table.cached
    again = build()
    assert len(calls) == n and again.table.cached and again.table.key == first.table.key
    assert again.predict({}) == pytest.approx(first.predict({}))
    keys = {first.table.key}
    for kw in ({"batch": 4}, {"threads": 2}, {"machine": "cpu-B"}, {"provider": "cuda"}, {"round_to": 8},
               {"round_to": "auto:16"}):
        other = build(**kw)
        assert not other.table.cached and other.table.key not in keys
        keys.add(other.table.key)
    # a different model (one weight changed) gets its own key
    proto = onnx.ModelProto()
    proto.CopyFrom(r20.model.proto)
    w = proto.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 1.0
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    from agmc_onnx.model import from_proto

    changed = build_latency_model(analyze(from_proto(proto, normalise_graph=False)), 1, round_to=16, cache_dir=tmp_path,
                                  timer=clock, runner_factory=synthetic(clock), machine="cpu-A", warmup=0, repeats=2)
    assert changed.table.key not in keys and not changed.table.cached
    # a broken cache file is rebuilt, not trusted
    path = tmp_path / f"{first.table.key}.json"
    path.write_text("{not json")
    before = len(calls)
    rebuilt = build()
    assert len(calls) > before and not rebuilt.table.cached
    assert json.loads(path.read_text())["key"] == first.table.key


@pytest.mark.parametrize("strategy", ["uniform", "l1-global"])
@pytest.mark.parametrize("flops", [None, 0.5])
def test_solvers_meet_latency_budgets_on_the_predictor(r20: Analysis, lm20: Any, strategy: str,
                                                       flops: float | None) -> None:  # fmt: skip
    budget = Budget(flops=flops, speedup=2.0)
    ctx = StrategyContext(r20, budget, 16, latency=lm20)
    plan = REGISTRY[strategy]().propose(ctx)
    limit = lm20.limit_ms(budget)
    assert limit == pytest.approx(lm20.predict({}) / 2.0)
    counts = plan.keep_counts()
    assert lm20.predict(counts) <= limit + 1e-12
    if flops is not None:
        assert r20.cost.plan_macs(plan) <= flops * r20.cost.total_macs
    # maximal: no single group can be widened by one unit without breaking a constraint
    for g in r20.prunable_groups():
        wider = round_count(counts[g.id] + 16, g.size, 16)
        if wider != counts[g.id]:
            c = {**counts, g.id: wider}
            macs_ok = flops is None or r20.cost.macs(c) <= flops * r20.cost.total_macs
            assert lm20.predict(c) > limit or not macs_ok


def test_speedup_is_a_ratio_of_predictions_not_of_a_measurement(r20: Analysis, lm20: Any) -> None:
    """The build's measured original (base_ms) may differ from the fit's prediction: a speed-up uses the latter."""
    from dataclasses import replace

    from agmc_onnx.latency import LatencyModel

    drifted = LatencyModel(r20, replace(lm20.table, base_ms=1.3 * lm20.table.base_ms))
    assert drifted.limit_ms(Budget(speedup=2.0)) == pytest.approx(lm20.predict({}) / 2.0)
    assert drifted.limit_ms(Budget(speedup=2.0, latency_ms=0.1 * lm20.predict({}))) == pytest.approx(0.1 * lm20.predict({}))


def test_absolute_latency_target_and_unreachable_target(r20: Analysis, lm20: Any) -> None:
    target = 0.6 * lm20.predict({})
    plan = REGISTRY["uniform"]().propose(StrategyContext(r20, Budget(latency_ms=target), 16, latency=lm20))
    assert lm20.predict_plan(plan) <= target
    with pytest.raises(InputError, match="unreachable"):
        REGISTRY["uniform"]().propose(StrategyContext(r20, Budget(latency_ms=1e-6), 16, latency=lm20))
    with pytest.raises(InputError, match="latency model"):
        REGISTRY["uniform"]().propose(StrategyContext(r20, Budget(speedup=2.0), 16))


def bumpy_latency(sizes: list[int]) -> Callable[[Mapping[int, int]], float]:
    """A latency that is NOT monotone in the widths (odd multiples of 8 cost extra), like real kernels."""

    def lat(keep: Mapping[int, int]) -> float:
        k = [3] + [keep.get(i, s) for i, s in enumerate(sizes)]
        base = sum(k[i] * k[i + 1] for i in range(len(k) - 1)) / 1000
        return base + sum(0.4 for c in k[1:] if c % 16 == 8)

    return lat


@pytest.mark.parametrize("target", [None, 0.6])
def test_action_wall_meets_every_constraint(target: float | None) -> None:
    sizes = [32, 64, 64, 128, 128, 64]
    ids = list(range(len(sizes)))

    def macs(keep: Mapping[int, int]) -> int:
        k = [3] + [keep.get(i, s) for i, s in zip(ids, sizes, strict=True)]
        return sum(9 * k[i] * k[i + 1] for i in range(len(k) - 1))

    lat = bumpy_latency(sizes)
    limit = 0.45 * lat({})
    env = PruningEnv(ids, sizes, macs, macs({}), target, 8, 0.1, lat, limit)
    rng = np.random.default_rng(0)
    used = []
    for _ in range(60):
        env.reset()
        done = False
        while not done:
            _, feats, done = env.step(float(rng.uniform(0, 1)))
            assert feats.shape == (DYN_FEATURES,)
        assert lat(env.chosen) <= limit + 1e-12
        if target is not None:
            assert macs(env.chosen) <= target * env.total
        used.append(lat(env.chosen) / limit)
    assert max(used) > 0.9  # the wall's lower side makes plans use the budget
    env.reset()
    f = env.features()
    assert f[6] > 0  # latency still reducible is a state feature


def test_env_rejects_unreachable_latency() -> None:
    lat = bumpy_latency([16, 16])
    with pytest.raises(InputError, match="out of reach"):
        PruningEnv([0, 1], [16, 16], lambda k: 1, 1, None, 8, 0.5, lat, 1e-9)


def test_verification_reports_predicted_vs_measured() -> None:
    section = {"batch": 1, "predicted_ms": 1.0, "predicted_original_ms": 2.0, "target_speedup": 2.0,
               "target_latency_ms": None}  # fmt: skip
    lat = {"results": [{"model": "original", "batch": 1, "median_ms": 2.2}, {"model": "pruned", "batch": 1, "median_ms": 1.25},
                       {"model": "pruned", "batch": 64, "median_ms": 9.0}]}  # fmt: skip
    out = verification(section, lat)["measured"]
    assert out["pruned_ms"] == 1.25 and out["error"] == pytest.approx(-0.2)
    assert out["speedup"] == pytest.approx(2.2 / 1.25) and out["met"] is False
    assert verification(section, None)["measured"] is None


def test_prune_model_api_with_latency_budget(lm20: Any) -> None:
    res = prune_model(MODELS / "resnet20.onnx", None, "l1-global", target_speedup=1.5, latency_model=lm20,
                      analysis=lm20.analysis)  # fmt: skip
    lb = res.report["latency_budget"]
    assert lb["predicted_ms"] <= lb["limit_ms"] and lb["target_speedup"] == 1.5
    assert res.report["target_flops"] is None


def test_cli_latency_budget_end_to_end_real_measurement(tmp_path: Path) -> None:
    """Small real ORT measurement: tables, budget, prune, interleaved bench, predicted vs measured in the report."""
    from agmc_onnx.cli import main

    out, rep = tmp_path / "p.onnx", tmp_path / "r.json"
    args = [str(MODELS / "resnet20.onnx"), "--target-speedup", "1.3", "--threads", "1", "--latency-cache",
            str(tmp_path / "cache"), "-o", str(out), "--report", str(rep), "--bench-repeats", "10"]  # fmt: skip
    result = CliRunner().invoke(main, ["prune", *args])
    assert result.exit_code == 0, result.output
    lb = json.loads(rep.read_text())["latency_budget"]
    assert lb["predicted_ms"] <= lb["limit_ms"]
    assert lb["measured"] is not None and lb["measured"]["pruned_ms"] > 0
    assert set(lb["measured"]) >= {"original_ms", "speedup", "error", "met"}
    assert list((tmp_path / "cache").glob("*.json"))  # the table was cached
    refine = lb["refine"]  # --latency-rounds 2 by default: measured at least once, the last round decides
    assert 1 <= len(refine["rounds"]) <= 3 and refine["met"] == refine["rounds"][-1]["met"]
    none = CliRunner().invoke(main, ["prune", *args, "--latency-rounds", "0", "--no-bench"])
    assert none.exit_code == 0, none.output
    assert json.loads(rep.read_text())["latency_budget"]["refine"] is None
    bad = CliRunner().invoke(main, ["prune", str(MODELS / "resnet20.onnx"), "--target-speedup", "0.5"])
    assert bad.exit_code == 2
