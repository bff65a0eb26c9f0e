"""agmc_onnx.latency.build: the predictor is exact on a synthetic timer; the cache's key and invalidation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import analyze
from agmc_onnx.latency import build_latency_model
from agmc_onnx.plan import ImportanceCache, plan_from_counts
from agmc_onnx.surgery import prune
from tests.latency.synthetic import OVERHEAD_S, FakeClock, random_counts, synthetic, truth_ms


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
