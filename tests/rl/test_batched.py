"""Batched episodes: K=1 reproduces the one-at-a-time search bit for bit; K>1 is reproducible and resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.rl.recording import CASES, RECORDING, run_case, summary


@pytest.mark.parametrize("name", list(CASES))
def test_k1_reproduces_the_recording_of_the_one_at_a_time_search(name: str, net: Path, data: Any, tmp_path: Path) -> None:
    """The recording was made from the code before batching (tests/rl/recording.py): same seed, same curve and plan."""
    want = json.loads(RECORDING.read_text())[name]
    got = summary(run_case(net, data, tmp_path, CASES[name]).search)
    assert got == want


def _recorded(name: str) -> dict[str, Any]:
    return json.loads(RECORDING.read_text())[name]


def test_random_search_and_ppo_aligned_with_its_update_are_the_same_for_every_k(net: Path, data: Any, tmp_path: Path) -> None:
    """Random draws never depend on learning, and PPO changes its policy only every `episodes_per_update` episodes."""
    random = run_case(net, data, tmp_path / "random", CASES["random"], options={"batch_episodes": 3})
    assert summary(random.search) == _recorded("random")
    ppo = run_case(net, data, tmp_path / "ppo", CASES["agmc-ppo"], options={"batch_episodes": 3})
    assert summary(ppo.search) == _recorded("agmc-ppo")


def test_ddpg_in_batches_is_reproducible_and_resumes_to_the_uninterrupted_result(net: Path, data: Any, tmp_path: Path) -> None:
    case, k = CASES["agmc-ddpg"], {"options": {"batch_episodes": 2}}
    full = run_case(net, data, tmp_path / "a", case, **k)
    again = run_case(net, data, tmp_path / "b", case, **k)
    assert summary(again.search) == summary(full.search)
    one = _recorded("agmc-ddpg")
    assert summary(full.search)["curve"][:3] == one["curve"][:3]  # the random warm-up does not depend on K
    assert summary(full.search)["curve"] != one["curve"]  # learning does: two episodes acted per policy version
    assert [e.kind for e in full.search.curve] == ["random"] * 3 + ["explore"] * 7

    def stop_at_5(e: Any) -> None:
        if e.episode == 4:  # the first episode of the batch (4, 5): the batch is checkpointed whole
            raise KeyboardInterrupt

    cut = run_case(net, data, tmp_path / "c", case, progress=stop_at_5, **k)
    assert cut.search.interrupted and len(cut.search.curve) == 6
    resumed = run_case(net, data, tmp_path / "c", case, resume=True, **k)
    assert resumed.search.resumed_from == 6
    assert summary(resumed.search) == summary(full.search)


def test_a_checkpoint_of_another_batch_size_is_refused(net: Path, data: Any, tmp_path: Path) -> None:
    from agmc_onnx.errors import InputError

    case = {**CASES["amc-ddpg"], "episodes": 4}
    run_case(net, data, tmp_path, case, options={"batch_episodes": 2})
    with pytest.raises(InputError, match="another search"):
        run_case(net, data, tmp_path, case, resume=True)


def test_a_batch_scores_each_new_plan_once_and_hands_back_scores_in_episode_order() -> None:
    """score_many sees every plan not scored before exactly once; repeats come from the memo (worker None)."""
    from agmc_onnx.rl.env import PruningEnv
    from agmc_onnx.rl.scoring import Scored
    from agmc_onnx.rl.search import Search

    sizes = [2, 2]  # few distinct plans: repeats within and across batches
    env = PruningEnv([0, 1], sizes, lambda k: sum(k.get(i, 2) for i in range(2)), 4, 1.0, 1, 0.5)
    calls: list[list[tuple[int, ...]]] = []

    def score_many(plans: Any) -> list[Scored]:
        keys = [tuple(p[g] for g in (0, 1)) for p in plans]
        calls.append(keys)
        return [Scored(float(sum(k)), i % 2, 0.1) for i, k in enumerate(keys)]

    result = Search(env, lambda c: -1.0, None, episodes=12, seed=0, batch=4, score_many=score_many).run()
    scored = [k for batch in calls for k in batch]
    assert len(scored) == len(set(scored)) and all(len(b) <= 4 for b in calls)
    assert [e.reward for e in result.curve] == [float(sum(round(r * 2) for r in e.ratios)) for e in result.curve]
    assert sum(e.worker is not None for e in result.curve) == len(scored) < 12
    one = Search(env, lambda c: float(sum(c.values())), None, episodes=12, seed=0).run()
    assert [e.ratios for e in one.curve] == [e.ratios for e in result.curve]  # random search: the same for every K
