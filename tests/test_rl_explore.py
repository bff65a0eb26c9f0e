"""Exploration schedule, elite replay and the actor's initial bias (issue 4's search-quality fixes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agmc_onnx.rl import DDPG, DDPGConfig, PruningEnv
from agmc_onnx.rl.env import DYN_FEATURES
from agmc_onnx.rl.search import Search
from agmc_onnx.rl.states import FixedStates


def _agent(steps: int = 4, **cfg: object) -> DDPG:
    """A small agent over one-hot states."""
    return DDPG(FixedStates(torch.eye(steps)), steps, DDPGConfig(hidden=16, batch=8, **cfg), seed=0)  # type: ignore[arg-type]


def _episode(agent: DDPG, action: float) -> list[tuple[int, np.ndarray, float, int, np.ndarray, bool]]:
    """One episode's transitions, every step taking `action`."""
    z = np.zeros(DYN_FEATURES, np.float32)
    return [(t, z, action, min(t + 1, agent.steps - 1), z, t == agent.steps - 1) for t in range(agent.steps)]


def test_noise_decays_per_episode_down_to_the_floor() -> None:
    """noise = max(floor, init * decay^k) after k decays; floor 0 is AMC's plain decay."""
    for floor in (0.0, 0.1):
        agent = _agent(init_noise=0.5, noise_decay=0.95, noise_floor=floor)
        seen = []
        for _ in range(100):
            agent.decay_noise()
            seen.append(agent.noise)
        assert seen[0] == pytest.approx(0.475)
        assert seen[9] == pytest.approx(max(floor, 0.5 * 0.95**10))
        assert min(seen) == pytest.approx(max(floor, 0.5 * 0.95**100))
        assert all(b <= a for a, b in zip(seen, seen[1:], strict=False))


def test_noise_starts_decaying_at_the_end_of_warm_up() -> None:
    """Warm-up episodes leave the noise at init_noise; each later episode decays it once."""
    steps = 3
    env = PruningEnv(list(range(steps)), [8] * steps, lambda k: sum(k.get(i, 8) for i in range(steps)), 24, 0.5, 1, 0.1)
    agent = DDPG(FixedStates(torch.eye(steps)), steps, DDPGConfig(hidden=8, batch=4, noise_floor=0.2), seed=0)
    Search(env, lambda c: sum(c.values()) / 24, agent, episodes=5, warmup=5, seed=0).run()
    assert agent.noise == 0.5
    Search(env, lambda c: sum(c.values()) / 24, agent, episodes=3, warmup=0, seed=0).run()
    assert agent.noise == pytest.approx(0.5 * 0.95**3)
    Search(env, lambda c: sum(c.values()) / 24, agent, episodes=40, warmup=0, seed=0).run()
    assert agent.noise == pytest.approx(0.2)


def test_elite_keeps_the_best_episodes_after_the_ring_overwrites_them() -> None:
    """With buffer room for 2 episodes, the best 2 of 6 still feed the minibatches."""
    agent = _agent(buffer_episodes=2, elite_episodes=2)
    for r in (0.9, 0.1, 0.8, 0.2, 0.3, 0.4):
        agent.observe_episode(_episode(agent, r), r)
    assert agent.elite_rewards == [0.9, 0.8]
    assert sorted({round(float(x), 3) for x in agent.elite.reward[: agent.elite.size]}) == [0.8, 0.9]
    assert {round(float(x), 3) for x in agent.buffer.reward[: agent.buffer.size]} == {0.3, 0.4}
    drawn = {round(float(x), 3) for x in agent._sample(512)["reward"]}
    assert drawn == {0.3, 0.4, 0.8, 0.9}
    restored = _agent(buffer_episodes=2, elite_episodes=2)
    restored.load_state_dict(agent.state_dict())
    assert restored.elite_rewards == agent.elite_rewards
    assert np.array_equal(restored.elite.action[: restored.elite.size], agent.elite.action[: agent.elite.size])


def test_no_elite_by_default_leaves_sampling_unchanged() -> None:
    """elite_episodes=0: the minibatch is the ring buffer's own draw (same RNG stream as before)."""
    a, b = _agent(elite_episodes=0), _agent(elite_episodes=0)
    for r in (0.5, 0.6, 0.7):
        a.observe_episode(_episode(a, r), r)
        b.observe_episode(_episode(b, r), r)
    assert a.elite.size == 0
    assert torch.equal(a._sample(16)["action"], b.buffer.sample(16, b.rng)["action"])


@pytest.mark.parametrize("init", [0.3, 0.7, 0.95])
def test_init_action_centres_the_untrained_actor(init: float) -> None:
    """init_action sets the last layer's bias: the untrained actor's mean action is near it."""
    agent = _agent(steps=8, init_action=init, a_min=0.2)
    s = torch.cat([torch.eye(8), torch.zeros(8, DYN_FEATURES)], dim=1)
    with torch.no_grad():
        mu = agent.actor(s)
    assert abs(float(mu.mean()) - init) < 0.1
