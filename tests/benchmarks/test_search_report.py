"""benchmarks/search_report.py: merging runs (stopped ones included) and the report's header, without a search."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from search_report import markdown, merge_runs, paired_line, read_run, renamed  # noqa: E402


def _row(model: str, strategy: str, seed: int, test: float) -> dict[str, Any]:
    return {"model": model, "strategy": strategy, "seed": seed, "skipped": False, "episodes": 3, "macs_ratio": 0.5,
            "reward_bn": test, "reward_raw": test, "written_reward": test, "written_test": test, "seconds": 1.0,
            "s_per_episode": 0.3, "episodes_to_99pct": 1}  # fmt: skip


def _run(rows: list[dict[str, Any]], machine: str, partial: bool = False) -> dict[str, Any]:
    facts = {"model": "resnet32.onnx", "original_reward": 0.9, "original_test": 0.9, "device": "cpu",
             "evaluator_mode": "torch", "threads": 1, "reward_images": 1000, "calib_images": 256,
             "curves": {f"{r['strategy']}/{r['seed']}": [0.5, r["written_test"]] for r in rows},
             "rewards": {f"{r['strategy']}/{r['seed']}": [0.5, r["written_test"]] for r in rows}}  # fmt: skip
    run = {"command": f"run on {machine}", "machine": machine, "wall": 10.0, "rows": rows, "models": [facts]}
    return {**run, "partial": True} if partial else run


def test_merge_keeps_a_stopped_runs_curves_and_says_it_stopped() -> None:
    done = _run([_row("resnet32.onnx", "amc", 0, 0.8)], "cpu A")
    stopped = _run([_row("resnet32.onnx", "agmc", 0, 0.82)], "cpu B", partial=True)
    merged = merge_runs([done, stopped])
    assert [r["strategy"] for r in merged["rows"]] == ["amc", "agmc"]
    assert set(merged["models"][0]["curves"]) == {"amc/0", "agmc/0"}
    assert merged["command"] == "run on cpu A ; run on cpu B (stopped before its end: the runs it finished)"
    assert merged["machine"] == "cpu A / cpu B" and merged["wall"] == 20.0


def test_merge_refuses_a_run_counted_twice() -> None:
    run = _run([_row("resnet32.onnx", "amc", 0, 0.8)], "cpu")
    with pytest.raises(SystemExit, match="in two runs"):
        merge_runs([run, run])


def test_a_log_gives_its_printed_rows_only(tmp_path: Path) -> None:
    log = tmp_path / "stopped.log"
    log.write_text("loading\n" + json.dumps(_row("resnet32.onnx", "random", 1, 0.7)) + "\nTraceback ...\n")
    run = read_run(log)
    assert [r["seed"] for r in run["rows"]] == [1] and run["models"] == []


def test_the_report_names_the_machine_it_ran_on_not_the_one_rendering_it() -> None:
    rows = [_row("resnet32.onnx", s, 0, t) for s, t in (("agmc", 0.82), ("amc", 0.8), ("random", 0.7))]
    text = markdown(rows, _run(rows, "x")["models"], "cmd", 12.0, "torch 9, riscv, no GPU")
    assert "torch 9, riscv, no GPU; wall 12 s" in text
    assert "## Held-out models" in text and "agmc >= amc + 1 test points: mean gap +2.00" in text


def test_paired_gap_and_its_interval_over_model_seed_pairs() -> None:
    pairs = {("resnet32.onnx", 0): (0.82, 0.80), ("resnet32.onnx", 1): (0.79, 0.80), ("wrn16_2.onnx", 0): (0.86, 0.83)}
    rows = [_row(m, k, s, t) for (m, s), ts in pairs.items() for k, t in zip(("agmc", "amc"), ts, strict=True)]
    rows.append(_row("wrn16_2.onnx", "agmc", 1, 0.99))  # no amc run for this seed: not a pair
    line = paired_line(rows, ["resnet32.onnx", "wrn16_2.onnx"], "agmc", "amc", 1.0)
    assert line.startswith("- agmc - amc paired by (model, seed) over 3 pairs: mean +1.33, std 2.08, ")
    lo, hi = (float(x) for x in line.split("interval [")[1].split("]")[0].split(", "))
    assert -1.0 <= lo < 1.33 < hi <= 3.0  # the bootstrap means lie between the smallest and largest gap
    assert "(+1 is inside it); agmc ahead in 2, behind in 1" in line
    assert paired_line(rows[:2], ["resnet32.onnx"], "agmc", "amc", 1.0).endswith("fewer than 2 pairs")


def test_rename_swaps_strategies_at_once_in_rows_curves_and_rewards() -> None:
    run = _run([_row("resnet32.onnx", "agmc", 0, 0.78), _row("resnet32.onnx", "agmc-frozen", 0, 0.80)], "cpu")
    out = renamed(run, {"agmc": "agmc-trained", "agmc-frozen": "agmc"})
    assert [(r["strategy"], r["written_test"]) for r in out["rows"]] == [("agmc-trained", 0.78), ("agmc", 0.80)]
    assert set(out["models"][0]["curves"]) == set(out["models"][0]["rewards"]) == {"agmc-trained/0", "agmc/0"}
    assert out["models"][0]["curves"]["agmc/0"] == [0.5, 0.80]
    assert out["command"].endswith("(strategies renamed: agmc -> agmc-trained, agmc-frozen -> agmc)")
    assert run["rows"][0]["strategy"] == "agmc" and renamed(run, {}) is run  # the input is left as it was
