"""Latency budgets: the limit a budget sets (agmc_onnx.budget), and it is met by the solvers, the RL action wall, the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import prune_model
from agmc_onnx.budget import required_ms
from agmc_onnx.errors import InputError
from agmc_onnx.plan import round_count
from agmc_onnx.rl.env import DYN_FEATURES, PruningEnv
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext
from tests.latency.synthetic import MODELS


def test_required_ms_takes_the_tighter_limit() -> None:
    assert required_ms(Budget(speedup=2.0), 10.0) == 5.0
    assert required_ms(Budget(speedup=2.0, latency_ms=4.0), 10.0) == 4.0
    assert required_ms(Budget(flops=0.5, latency_ms=6.0), 10.0) == 6.0
    with pytest.raises(ValueError):
        required_ms(Budget(flops=0.5), 10.0)


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
