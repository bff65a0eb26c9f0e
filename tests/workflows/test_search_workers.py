"""search_prune's plumbing for scorer workers, without Ray: a stand-in pool scoring in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agmc_onnx import latency
from agmc_onnx.rl.scoring import Scored
from agmc_onnx.workflows import search as workflow
from tests.latency.synthetic import FakeClock, synthetic
from tests.rl.recording import fixture_data, fixture_net


class InProcessPool:
    """ScorerPool's interface over one Evaluator built by the pool's factory; records what happens when."""

    events: list[str] = []

    def __init__(self, factory: Any, workers: int, address: str | None = None, device: str | None = None) -> None:
        self.factory, self.workers, self.evaluator = factory, workers, None
        self.batches: list[int] = []

    def start(self) -> None:
        self.events.append("workers start")
        self.evaluator = self.factory(device="cpu", threads=1)

    def score_many(self, plans: list[Any]) -> list[Scored]:
        self.batches.append(len(plans))
        return [Scored(self.evaluator.score(p), i % self.workers, 0.01) for i, p in enumerate(plans)]

    def score(self, plan: Any) -> float:
        return self.score_many([plan])[0].reward

    def __getattr__(self, name: str) -> Any:  # mode, bn_recalibrated, threads, calls, seconds
        return getattr(self.__dict__["evaluator"], name)

    def summary(self) -> dict[str, Any]:
        return {"count": self.workers, "ray_address": "in-process", "restarts": 0, "per_worker": []}

    def __enter__(self) -> InProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.append("workers stop")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixture_net(tmp_path_factory.mktemp("plumbing"))


def test_latency_tables_are_measured_before_the_workers_start(net: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    real = latency.build_latency_model

    def build(analysis: Any, batch: int, provider: str, threads: int | None, round_to: Any, **kw: Any) -> Any:
        InProcessPool.events.append("latency tables")
        clock = FakeClock()
        return real(analysis, batch, provider, threads, round_to, cache_dir=tmp_path / "cache", timer=clock,
                    runner_factory=synthetic(clock), machine="test-cpu", warmup=1, repeats=3)  # fmt: skip

    monkeypatch.setattr(latency, "build_latency_model", build)
    monkeypatch.setattr(workflow, "require_ray", lambda workers: None)
    monkeypatch.setattr(workflow, "ScorerPool", InProcessPool)
    InProcessPool.events = []
    r = workflow.search_prune(net, None, "random", data=fixture_data(net), episodes=5, round_to=1, device="cpu",
                              workers=2, latency={"target_speedup": 1.2, "latency_rounds": 0})  # fmt: skip
    assert InProcessPool.events == ["latency tables", "workers start", "workers stop"]
    s = r.report["search"]
    assert s["workers"]["count"] == 2 and len(s["curve"]) == 5 and s["episodes_per_second"] > 0
    assert {e["worker"] for e in s["curve"]} <= {0, 1, None}
    assert r.report["latency_budget"]["predicted_ms"] <= r.report["latency_budget"]["limit_ms"] + 1e-12


def test_one_worker_scores_in_process_and_reports_it(net: Path, tmp_path: Path) -> None:
    r = workflow.search_prune(net, 0.5, "random", data=fixture_data(net), episodes=3, round_to=1, device="cpu",
                              threads=1, output=tmp_path / "o.onnx")  # fmt: skip
    w = r.report["search"]["workers"]
    assert w["count"] == 1 and w["ray_address"] is None and len(w["per_worker"]) == 1
    assert w["per_worker"][0]["candidates"] == r.report["search"]["scored_candidates"] <= 3
    assert [e.worker for e in r.search.curve if e.worker is not None] == [0] * w["per_worker"][0]["candidates"]


def test_progress_bar_shows_rate_workers_and_their_scoring_time() -> None:
    from agmc_onnx.commands.prune import ProgressBar
    from agmc_onnx.rl.search import Episode

    bar = ProgressBar(4, "agmc", workers=2)
    for i, (w, s) in enumerate([(0, 1.0), (1, 3.0), (0, 2.0), (None, 0.0)]):
        bar(Episode(i, 0.5, 0.5, [0.5], 0.5, 0.6, "explore", w, s))
    assert bar.info(Episode(3, 0.5, 0.5, [0.5], 0.5, 0.6, "explore")).endswith("2.00 ep/s  2 workers 1.50/3.00 s")
