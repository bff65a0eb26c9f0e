"""agmc_onnx.latency.layers: bounded grids, shared configurations, grids on each group's step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import analyze
from agmc_onnx.latency import build_latency_model, layer_specs
from agmc_onnx.plan import round_count
from tests.latency.synthetic import MODELS, FakeClock, synthetic


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
