"""PPO agent: learns a synthetic reward, learns only from its own free draws, batches, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from agmc_onnx.errors import InputError
from agmc_onnx.rl.ddpg import DDPG
from agmc_onnx.rl.env import DYN_FEATURES, PruningEnv
from agmc_onnx.rl.ppo import PPO, PPOConfig
from agmc_onnx.rl.search import Search
from agmc_onnx.rl.states import FixedStates

STEPS, SIZE = 6, 32
PREFER = np.array([1, 0] * (STEPS // 2), float)


def _env() -> PruningEnv:
    return PruningEnv(list(range(STEPS)), [SIZE] * STEPS, lambda k: sum(k.get(i, SIZE) for i in range(STEPS)),
                      STEPS * SIZE, 0.5, 1, 0.1)  # fmt: skip


def _score(counts: dict[int, int]) -> float:
    return float(sum(PREFER[i] * counts[i] / SIZE for i in range(STEPS)) / PREFER.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_learns_which_groups_to_keep(seed: int) -> None:
    """Reward = kept share of the even groups: the greedy policy keeps them and cuts the odd ones to the floor."""
    agent = PPO(FixedStates(torch.eye(STEPS)), STEPS, PPOConfig(hidden=64, a_min=0.1), seed=seed)
    trained = Search(_env(), _score, agent, episodes=150, warmup=0, seed=seed).run()
    assert all(e.kind == "explore" for e in trained.curve)
    greedy = Search(_env(), _score, agent, episodes=0, seed=seed).run()
    ratios = greedy.best_ratios()
    # optimum 84/96 = 0.875 (odd groups at 4/32); uniform 0.5; the untrained policy's mean plan ~0.5
    assert greedy.best_reward > 0.8, ratios
    assert max(ratios[i] for i in (1, 3, 5)) < 0.35, ratios


def test_ppo_learns_from_its_own_free_draws_in_batches() -> None:
    """Warm-up (random) episodes and steps the wall forces are not learned from; updates wait for a full batch."""
    src = nn.Linear(STEPS, 4)
    source = _Source(src)
    agent = PPO(source, STEPS, PPOConfig(hidden=16, episodes_per_update=2), seed=0)
    dyn = np.zeros(DYN_FEATURES, np.float32)
    transitions = [(t, dyn, 0.5, t + 1, dyn, t == STEPS - 1) for t in range(STEPS)]
    agent.observe_episode(transitions, 0.7)  # a warm-up episode: the agent drew nothing
    assert agent.rollout == []
    agent.begin_episode()
    for t in range(STEPS):
        lo, hi = (0.5, 0.5) if t == STEPS - 1 else (0.0, 1.0)  # the last step forced by the wall
        a = agent.act(t, dyn, explore=True, lo=lo, hi=hi)
        assert 0.05 <= a <= 1.0
    agent.observe_episode(transitions, 0.7)
    assert len(agent.rollout) == 1 and list(agent.rollout[0]["step"]) == list(range(STEPS - 1))
    w0, p0 = src.weight.detach().clone(), [p.clone() for p in agent.actor.parameters()]
    assert agent.learn() == (0.0, 0.0) and torch.equal(src.weight, w0)  # one episode of two: no update yet
    agent.begin_episode()
    for t in range(STEPS):
        agent.act(t, dyn, explore=True)
    agent.observe_episode(transitions, 0.2)
    agent.learn()
    assert agent.rollout == []
    assert not torch.equal(src.weight, w0)  # the encoder trains with the policy
    assert any(not torch.equal(a, b) for a, b in zip(p0, agent.actor.parameters(), strict=True))


def test_ppo_greedy_action_is_the_policy_mean_and_state_round_trips() -> None:
    agent = PPO(FixedStates(torch.eye(STEPS)), STEPS, PPOConfig(hidden=16, init_action=0.8), seed=3)
    dyn = np.zeros(DYN_FEATURES, np.float32)
    assert agent.act(0, dyn, explore=False) == pytest.approx(0.8, abs=0.03)
    agent.begin_episode()
    for t in range(STEPS):
        agent.act(t, dyn, explore=True)
    agent.observe_episode([(t, dyn, 0.5, t + 1, dyn, False) for t in range(STEPS)], 0.4)
    twin = PPO(FixedStates(torch.eye(STEPS)), STEPS, PPOConfig(hidden=16, init_action=0.8), seed=9)
    twin.load_state_dict(agent.state_dict())
    assert len(twin.rollout) == 1
    draws = [agent.act(1, dyn, explore=True) for _ in range(5)]
    assert [twin.act(1, dyn, explore=True) for _ in range(5)] == draws  # same RNG, same networks


def test_policy_files_name_their_agent() -> None:
    ppo = PPO(FixedStates(torch.eye(STEPS)), STEPS, seed=0)
    ddpg = DDPG(FixedStates(torch.eye(STEPS)), STEPS, seed=0)
    with pytest.raises(InputError, match="saved by agent 'ppo'"):
        ddpg.load_policy(ppo.policy_dict())
    with pytest.raises(InputError, match="saved by agent 'ddpg'"):
        ppo.load_policy(ddpg.policy_dict())
    PPO(FixedStates(torch.eye(STEPS)), STEPS, seed=1).load_policy(ppo.policy_dict())


class _Source(nn.Module):
    """A trainable state source: a linear map of the one-hot step index."""

    kind = "test"

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin
        self.dim = lin.out_features

    def forward(self) -> torch.Tensor:
        return self.lin(torch.eye(self.lin.in_features))
