"""Scorer workers on Ray: reproducible for a fixed worker count, unchanged by a worker's death, resumable.

One embedded Ray instance serves the module (the pools join it and leave it running); skipped without Ray.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.rl.recording import CASES, RECORDING, run_case, summary

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    import logging

    # 6 logical CPUs: the shared pool, a search_prune pool and a test's own pool may hold 2 each at once
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two_workers(net: Path, data: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The agmc DDPG case through search_prune on two workers (two episodes per policy version)."""
    return run_case(net, data, tmp_path_factory.mktemp("w2"), CASES["agmc-ddpg"], workers=2)


@pytest.fixture(scope="module")
def pool(net: Path, data: Any) -> Iterator[Any]:
    """Two workers scoring like search_prune's, started once and shared by the searches below (to keep them short)."""
    from agmc_onnx.api import analyze
    from agmc_onnx.evaluate import Evaluator
    from agmc_onnx.rl.workers import ScorerPool

    with ScorerPool(partial(Evaluator, analyze(net), data.reward, data.calibration, calib_images=256), 2) as p:
        p.start()
        yield p


def search(net: Path, pool: Any, case: dict[str, Any], checkpoint: Path, **options: Any) -> Any:
    """`case` searched by prune_model with `pool` as its scorer; returns the SearchResult."""
    from agmc_onnx.api import prune_model

    got: dict[str, Any] = {}
    opts = {**case.get("options", {}), "episodes": case["episodes"], "agent": case.get("agent", "ddpg"),
            "checkpoint": checkpoint, "on_result": lambda r: got.setdefault("r", r), **options}  # fmt: skip
    if "warmup" in case:
        opts["warmup"] = case["warmup"]
    prune_model(net, 0.5, case["strategy"], round_to=1, seed=case["seed"], evaluator=pool, options=opts)
    return got["r"]


def test_two_workers_twice_give_the_same_search_as_batches_of_two_in_one_process(two_workers: Any, pool: Any,
                                                                                 net: Path, data: Any, tmp_path: Path) -> None:  # fmt: skip
    again = search(net, pool, CASES["agmc-ddpg"], tmp_path / "again")
    assert summary(again) == summary(two_workers.search)
    local = run_case(net, data, tmp_path / "local", CASES["agmc-ddpg"], options={"batch_episodes": 2})
    assert summary(local.search) == summary(two_workers.search)  # where a candidate is scored changes nothing
    s = two_workers.report["search"]
    w = s["workers"]
    assert w["count"] == 2 and w["restarts"] == 0 and len(w["per_worker"]) == 2
    assert sum(p["candidates"] for p in w["per_worker"]) == s["scored_candidates"] > 0
    assert all(p["seconds_per_candidate"] > 0 and p["pid"] != os.getpid() for p in w["per_worker"])
    assert {e.worker for e in two_workers.search.curve} <= {0, 1, None} and s["episodes_per_second"] > 0
    assert s["evaluator_mode"] == local.report["search"]["evaluator_mode"] and s["bn_recalibrated"]


def test_random_search_on_workers_is_the_one_at_a_time_search(pool: Any, net: Path, tmp_path: Path) -> None:
    got = search(net, pool, CASES["random"], tmp_path)
    assert summary(got) == json.loads(RECORDING.read_text())["random"]


def test_a_worker_killed_mid_episode_changes_nothing(two_workers: Any, pool: Any, net: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The 5th candidate's worker is SIGKILLed right after the candidate is handed to it: it is scored elsewhere."""
    from agmc_onnx.rl.workers import ScorerPool

    submitted: list[int] = []
    original = ScorerPool._submit

    def submit_then_kill(self: ScorerPool, slot: int, plan: Any) -> Any:
        ref = original(self, slot, plan)
        submitted.append(slot)
        if len(submitted) == 5:
            os.kill(self.stats[slot].pid, signal.SIGKILL)
        return ref

    monkeypatch.setattr(ScorerPool, "_submit", submit_then_kill)
    restarts, calls = pool.restarts, pool.calls
    got = search(net, pool, CASES["agmc-ddpg"], tmp_path)
    assert summary(got) == summary(two_workers.search)
    assert pool.restarts == restarts + 1 and len(submitted) == pool.calls - calls + 1


def test_checkpoint_and_resume_with_workers(two_workers: Any, pool: Any, net: Path, tmp_path: Path) -> None:
    def stop(e: Any) -> None:
        if e.episode == 5:
            raise KeyboardInterrupt

    cut = search(net, pool, CASES["agmc-ddpg"], tmp_path, progress=stop)
    assert cut.interrupted and len(cut.curve) == 6
    resumed = search(net, pool, CASES["agmc-ddpg"], tmp_path, resume=True)
    assert resumed.resumed_from == 6
    assert summary(resumed) == summary(two_workers.search)


class FlakyScorer:
    """Scores a string by its length; 'oom...' raises torch's out-of-memory error once per worker, 'bad' a ValueError."""

    mode, bn_recalibrated = "fake", False

    def __init__(self, device: str, threads: int | None) -> None:
        self.seen: set[str] = set()

    def score(self, plan: str) -> float:
        import torch

        if plan.startswith("oom") and plan not in self.seen:
            self.seen.add(plan)
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        if plan == "bad":
            raise ValueError("not a plan")
        return float(len(plan))


def test_out_of_memory_is_tried_elsewhere_other_errors_propagate_and_no_workers_left_is_an_error() -> None:
    from agmc_onnx.errors import AgmcError
    from agmc_onnx.rl.workers import ScorerPool

    with ScorerPool(FlakyScorer, 2, max_restarts=0) as p:
        assert [s.reward for s in p.score_many(["oom-1", "ab", "abc"])] == [5.0, 2.0, 3.0]
        assert p.restarts == 0 and p.calls == 3 and p.mode == "fake"
        with pytest.raises(ValueError, match="not a plan"):
            p.score_many(["bad"])
        for s in p.stats:
            os.kill(s.pid, signal.SIGKILL)
        with pytest.raises(AgmcError, match=r"every scoring worker died \(0 replaced\)"):
            p.score_many(["a", "b"])
