"""DDPG agent, replay buffer, soft updates, the action wall, and learning a synthetic reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agmc_onnx.errors import InputError
from agmc_onnx.rl import DDPG, DDPGConfig, PruningEnv, ReplayBuffer, allowed_counts
from agmc_onnx.rl.ddpg import truncated_normal
from agmc_onnx.rl.env import DYN_FEATURES
from agmc_onnx.rl.search import Search
from agmc_onnx.rl.states import FixedStates


def chain_env(target: float, sizes: list[int], round_to: int | str = 1, a_min: float = 0.1) -> PruningEnv:
    """A conv chain: MACs of layer i = keep[i-1] * keep[i] * 9 (bilinear, like real convs)."""
    ids = list(range(len(sizes)))

    def macs(keep: dict[int, int]) -> int:
        k = [3] + [keep.get(i, s) for i, s in zip(ids, sizes, strict=True)]
        return sum(9 * k[i] * k[i + 1] for i in range(len(k) - 1)) + 10 * k[-1]

    return PruningEnv(ids, sizes, macs, macs({}), target, round_to, a_min)


def test_allowed_counts_follow_round_to_and_floor() -> None:
    assert allowed_counts(64, 16, 0.2) == [16, 32, 48, 64]
    assert allowed_counts(40, 16, 0.05) == [16, 32, 40]
    assert allowed_counts(8, 16, 0.2) == [8]
    assert allowed_counts(10, 1, 0.5) == [5, 6, 7, 8, 9, 10]
    assert allowed_counts(16, "auto:16", 0.05) == [4, 8, 12, 16]  # per-group steps (plan.group_step)
    assert allowed_counts(32, "auto:16", 0.05) == [8, 16, 24, 32]
    assert allowed_counts(64, "auto:16", 0.05) == [16, 32, 48, 64]


@pytest.mark.parametrize("round_to", [1, 4, "auto:16"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_action_wall_meets_target_for_any_actions(target: float, round_to: int | str) -> None:
    rng = np.random.default_rng(0)
    sizes = [16, 32, 32, 64, 64, 24]
    for _ in range(60):
        env = chain_env(target, sizes, round_to)
        env.reset()
        while env.t < env.steps:
            env.step(float(rng.choice([0.0, 1.0, rng.random()])))
        got = env.plan_macs()
        assert got <= env.limit
        last = env.group_ids[-1]
        options = env.counts[-1]
        i = options.index(env.chosen[last])
        if i + 1 < len(options):  # one more step of the last group would break the target
            assert env.macs({**env.chosen, last: options[i + 1]}) > env.limit


def test_unreachable_target_is_an_input_error() -> None:
    with pytest.raises(InputError, match="out of reach"):
        chain_env(0.001, [16, 16], a_min=0.5)


def test_replay_buffer_wraps_and_restores() -> None:
    buf = ReplayBuffer(5)
    for i in range(8):
        buf.add(i, np.full(DYN_FEATURES, i, np.float32), i / 10, float(i), i + 1, np.zeros(DYN_FEATURES, np.float32), i == 7)
    assert buf.size == 5 and buf.pos == 3
    assert sorted(buf.step.tolist()) == [3, 4, 5, 6, 7]
    other = ReplayBuffer(5)
    other.load_state_dict(buf.state_dict())
    b1 = buf.sample(16, np.random.default_rng(1))
    b2 = other.sample(16, np.random.default_rng(1))
    for k in b1:
        assert torch.equal(b1[k], b2[k])
    assert set(b1["step"].tolist()) <= {3, 4, 5, 6, 7}


def test_soft_update_moves_targets_by_tau() -> None:
    agent = DDPG(FixedStates(torch.eye(3)), 3, DDPGConfig(hidden=8, tau=0.25), seed=0)
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.actor_target.parameters()]
    agent.soft_update()
    for b, p, t in zip(before, agent.actor.parameters(), agent.actor_target.parameters(), strict=True):
        assert torch.allclose(t, 0.75 * b + 0.25 * p, atol=1e-6)


def test_truncated_normal_stays_inside_and_centres() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(rng, 0.6, 0.1, 0.2, 1.0) for _ in range(2000)])
    assert draws.min() >= 0.2 and draws.max() <= 1.0
    assert abs(draws.mean() - 0.6) < 0.01
    edge = np.array([truncated_normal(rng, 1.3, 0.5, 0.2, 1.0) for _ in range(500)])
    assert edge.min() >= 0.2 and edge.max() <= 1.0 and edge.mean() > 0.6


def test_update_changes_actor_critic_and_source_encoder() -> None:
    from torch import nn

    class Learned(nn.Module):
        """A trainable state table, to check the encoder sits in the actor's optimiser."""

        kind = "learned"

        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(4, 3))
            self.dim = 3

        def forward(self) -> torch.Tensor:
            return self.table

    for lr_encoder in (None, 0.0):  # 0: the encoder stays as built (not "fall back to lr_actor")
        src = Learned()
        agent = DDPG(src, 4, DDPGConfig(hidden=16, batch=8, lr_encoder=lr_encoder), seed=0)
        for i in range(16):
            agent.buffer.add(i % 4, np.zeros(DYN_FEATURES, np.float32), 0.5, float(i % 2), 0, np.zeros(DYN_FEATURES, np.float32), False)
        t0, c0 = src.table.detach().clone(), [p.clone() for p in agent.critic.parameters()]
        agent.update()
        assert torch.equal(t0, src.table.detach()) == (lr_encoder == 0.0)
        assert any(not torch.equal(a, b) for a, b in zip(c0, agent.critic.parameters(), strict=True))
        assert agent.moving_average is not None


def test_agent_learns_which_groups_to_keep() -> None:
    """Reward = kept share of the even groups; the optimum keeps them whole and the odd ones at a_min."""
    steps, size = 6, 32
    env = PruningEnv(list(range(steps)), [size] * steps, lambda k: sum(k.get(i, size) for i in range(steps)),
                     steps * size, 0.5, 1, 0.1)  # fmt: skip
    prefer = np.array([1, 0] * (steps // 2), float)

    def score(counts: dict[int, int]) -> float:
        return float(sum(prefer[i] * counts[i] / size for i in range(steps)) / prefer.sum())

    agent = DDPG(FixedStates(torch.eye(steps)), steps, DDPGConfig(hidden=64, a_min=0.1), seed=0)
    Search(env, score, agent, episodes=150, warmup=30, seed=0).run()
    greedy = Search(env, score, agent, episodes=0, seed=0).run()
    ratios = greedy.best_ratios()
    # the optimum: odd groups at 4/32, even groups share the rest: reward 84/96 = 0.875 (uniform: 0.5)
    assert np.mean([ratios[i] for i in (0, 2, 4)]) > 0.75, ratios
    assert max(ratios[i] for i in (1, 3, 5)) < 0.35, ratios
    assert greedy.best_reward > 0.8


def test_learn_encodes_once_per_phase_and_moves_the_encoder() -> None:
    """learn(n): one encoder forward for n minibatch updates; the encoder still moves (mean actor gradient)."""
    from torch import nn

    class Counting(nn.Module):
        kind = "counting"

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.dim = 3
            self.calls = 0

        def forward(self) -> torch.Tensor:
            self.calls += 1
            return self.lin(torch.eye(4))

    for schedule, forwards in (("episode", 1), ("update", 5)):
        src = Counting()
        agent = DDPG(src, 4, DDPGConfig(hidden=16, batch=8, encoder_schedule=schedule, critic_warmup=0), seed=0)
        for i in range(16):
            agent.buffer.add(i % 4, np.zeros(DYN_FEATURES, np.float32), 0.5, float(i % 2), 0,
                             np.zeros(DYN_FEATURES, np.float32), False)  # fmt: skip
        w0, a0 = src.lin.weight.detach().clone(), [p.clone() for p in agent.actor.parameters()]
        src.calls = 0
        agent.learn(5)
        assert src.calls == forwards
        assert not torch.equal(w0, src.lin.weight.detach())
        assert any(not torch.equal(a, b) for a, b in zip(a0, agent.actor.parameters(), strict=True))


def test_critic_warmup_fits_the_critic_before_the_actor_moves() -> None:
    """critic_warmup: the first learn() first fits the critic alone; the flag survives a checkpoint."""
    agent = DDPG(FixedStates(torch.eye(4)), 4, DDPGConfig(hidden=16, batch=8, critic_warmup=30), seed=0)
    for i in range(32):
        agent.buffer.add(i % 4, np.zeros(DYN_FEATURES, np.float32), (i % 4) / 4, float(i % 4 == 0), 0,
                         np.zeros(DYN_FEATURES, np.float32), False)  # fmt: skip
    a0, c0 = [p.clone() for p in agent.actor.parameters()], [p.clone() for p in agent.critic.parameters()]
    agent._warm_critic(30)
    assert all(torch.equal(a, b) for a, b in zip(a0, agent.actor.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(c0, agent.critic.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(agent.critic.parameters(), agent.critic_target.parameters(), strict=True))
    fresh = DDPG(FixedStates(torch.eye(4)), 4, DDPGConfig(hidden=16, batch=8, critic_warmup=30), seed=0)
    assert not fresh.critic_warmed and agent.critic_warmed
    fresh.load_state_dict(agent.state_dict())
    assert fresh.critic_warmed
    other = DDPG(FixedStates(torch.eye(4)), 4, DDPGConfig(hidden=16, batch=8, critic_warmup=30), seed=0)
    other.buffer.load_state_dict(agent.buffer.state_dict())
    other.learn(1)  # the warm-up runs inside the first learn()
    assert other.critic_warmed


def test_default_warmup_is_a_third_capped_at_66() -> None:
    """ResNet-56 at 300 episodes stalled after a 100-episode warm-up (see rl/search.py); the default caps it."""
    from agmc_onnx.rl.search import MAX_DEFAULT_WARMUP

    env = PruningEnv([0, 1], [8, 8], lambda k: sum(k.get(i, 8) for i in (0, 1)), 16, 0.5, 1, 0.1)
    agent = DDPG(FixedStates(torch.eye(2)), 2, DDPGConfig(hidden=8), seed=0)
    assert Search(env, lambda c: 0.0, agent, episodes=90).warmup == 30
    assert Search(env, lambda c: 0.0, agent, episodes=300).warmup == MAX_DEFAULT_WARMUP == 66
    assert Search(env, lambda c: 0.0, agent, episodes=300, warmup=100).warmup == 100
    from agmc_onnx.rl.ppo import PPO

    ppo = PPO(FixedStates(torch.eye(2)), 2, seed=0)
    assert Search(env, lambda c: 0.0, ppo, episodes=300).warmup == 0  # on-policy: learns only from its own draws
