"""PPO (GNN-RL's agent, Yu & Jannesari): a Beta policy over keep ratios, a value baseline, clipped updates.

Same interface as the DDPG agent, so the search loop, the action wall, checkpoints and policy files
work unchanged. The policy is a Beta distribution on [a_min, 1] (bounded like the action, no
squashing bias); exploration is its own spread, narrowed by learning against an entropy bonus, not
a noise schedule. PPO is on-policy: random warm-up episodes (if any are asked for) are scored but
not learned from. Every `episodes_per_update` explored episodes make one update: `epochs` passes of
the clipped surrogate over all their steps, the advantage of a step being the episode's reward
minus the value baseline V(state), standardised over the batch. Episodes the search loop acts in a
batch (K per policy version, for parallel scoring) are handed back with their draws (`end_episode`);
when K divides `episodes_per_update` the search is the one-at-a-time search exactly.

As in the DDPG agent, the state source (GNN for agmc) trains with the policy: each epoch runs the
encoder once, the policy loss backpropagates into it, and the value network reads detached states.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Beta

from agmc_onnx.rl.ddpg import one_thread
from agmc_onnx.rl.env import DYN_FEATURES
from agmc_onnx.rl.policy import load_policy_source, policy_header
from agmc_onnx.rl.states import source_optimizer


@dataclass
class PPOConfig:
    """Hyper-parameters: PPO's usual clip 0.2; a short search needs short batches and a larger step.

    Synthetic reward of tests/test_ppo.py, 150 episodes, 3 seeds, greedy reward (optimum 0.875):
    Adam 3e-4, 8 epochs, 5 episodes per update 0.64; 1e-3, 10 epochs, 4 episodes 0.85.
    """

    hidden: int = 128
    lr_actor: float = 1e-3
    lr_critic: float = 1e-3
    lr_encoder: float | None = None  # None: lr_actor; 0: the encoder stays as built
    episodes_per_update: int = 4
    epochs: int = 10
    clip: float = 0.2
    entropy: float = 0.01
    max_grad_norm: float = 0.5
    a_min: float = 0.05
    init_action: float | None = None  # the policy's initial mean keep ratio (None: 0.5 of the range)
    updates_per_step: int = 1  # the search loop's learn(n) argument; PPO learns per batch of episodes instead


class BetaActor(nn.Module):
    """s -> Beta(alpha, beta) over x in (0, 1); the keep ratio is a_min + (1 - a_min) x."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """[B, dim] -> (alpha [B], beta [B]), both > 1 (unimodal)."""
        out = nn.functional.softplus(self.net(s)) + 1.0
        return out[:, 0], out[:, 1]


class Value(nn.Module):
    """V(s) -> [B]: the expected reward of the episode from this state."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, s: Tensor) -> Tensor:
        """[B, dim] -> [B]."""
        return self.net(s).squeeze(-1)


_EPS = 1e-4  # Beta samples are kept off 0 and 1, where the log-density is unbounded


class PPO:
    """The agent: samples keep ratios from a Beta policy per step, learns in batches of episodes."""

    on_policy = True  # learns only from its own draws: the search gives it no random warm-up by default

    def __init__(self, source: nn.Module, steps: int, config: PPOConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or PPOConfig()
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.source = source
        self.steps = steps
        dim = source.dim + DYN_FEATURES
        self.actor = BetaActor(dim, self.cfg.hidden)
        if self.cfg.init_action is not None:  # mean alpha / (alpha + beta) = q, both > 1 (unimodal)
            q = (min(max(self.cfg.init_action, self.cfg.a_min + 0.05), 0.95) - self.cfg.a_min) / (1 - self.cfg.a_min)
            k = max(4.0, 1.5 / min(q, 1 - q))
            inv = lambda y: math.log(math.expm1(y - 1.0))  # noqa: E731  softplus(z) + 1 = y
            with torch.no_grad():
                self.actor.net[-1].bias.copy_(torch.tensor([inv(k * q), inv(k * (1 - q))]))
        self.value = Value(dim, self.cfg.hidden)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=self.cfg.lr_critic)
        self.source_params, self.source_opt = source_optimizer(source, self.cfg.lr_encoder, self.cfg.lr_actor)
        self.rollout: list[dict[str, np.ndarray]] = []  # explored episodes since the last update
        self._pending: list[tuple[int, np.ndarray, float, float, bool]] = []  # this episode's (step, dyn, x, log p, free)
        self._table: Tensor | None = None
        self.noise = 0.0  # no noise schedule (reported by the same field as DDPG's)

    # acting -------------------------------------------------------------------------------
    def begin_episode(self) -> None:
        """Encode the model once for this episode's steps (no gradient, one thread)."""
        self._pending = []
        with one_thread(), torch.no_grad():
            self._table = self.source()

    def _state(self, step: int, dyn: np.ndarray) -> Tensor:
        if self._table is None:
            self.begin_episode()
        assert self._table is not None
        return torch.cat([self._table[step], torch.from_numpy(dyn)]).unsqueeze(0)

    def act(self, step: int, dyn: np.ndarray, explore: bool, lo: float = 0.0, hi: float = 1.0) -> float:
        """A keep ratio for `step`: a Beta draw when exploring (recorded for learning), else its mean.

        `lo`/`hi` (the action wall) are applied by the environment; the draw itself is what PPO scores,
        except at steps the wall forces (lo == hi), where the draw changes nothing and is not learned from.
        """
        with torch.no_grad():
            alpha, beta = (float(v[0]) for v in self.actor(self._state(step, dyn)))
        if explore:
            x = float(np.clip(self.rng.beta(alpha, beta), _EPS, 1 - _EPS))
            logp = float(Beta(torch.tensor(alpha), torch.tensor(beta)).log_prob(torch.tensor(x)))
            self._pending.append((step, dyn.copy(), x, logp, hi - lo > 1e-9))
        else:
            x = alpha / (alpha + beta)
        return self.cfg.a_min + (1 - self.cfg.a_min) * x

    def random_action(self, lo: float = 0.0, hi: float = 1.0) -> float:
        """A uniform keep ratio in [max(a_min, lo), min(1, hi)] (warm-up; not learned from)."""
        lo, hi = max(self.cfg.a_min, lo), min(1.0, hi)
        return float(lo + (hi - lo) * self.rng.random()) if hi > lo else float(hi)

    def end_episode(self) -> list[tuple[int, np.ndarray, float, float, bool]]:
        """The episode just acted: its draws (step, dyn, x, log p, free), handed back to observe_episode later."""
        pending, self._pending = self._pending, []
        return pending

    # learning -----------------------------------------------------------------------------
    def observe_episode(self, transitions: list[tuple[int, np.ndarray, float, int, np.ndarray, bool]], reward: float,
                        drawn: list[tuple[int, np.ndarray, float, float, bool]] | None = None) -> None:  # fmt: skip
        """Keep an explored episode (the policy's own draws) for the next update; others are not on-policy.

        `drawn` is the episode's end_episode() (episodes acted in a batch are observed after it); None: the draws
        since begin_episode().
        """
        pending = self.end_episode() if drawn is None else drawn
        if len(pending) != len(transitions):
            return
        pending = [p for p in pending if p[4]]
        if not pending:
            return
        self.rollout.append({"step": np.array([p[0] for p in pending], np.int64), "dyn": np.stack([p[1] for p in pending]),
                             "x": np.array([p[2] for p in pending], np.float32),
                             "logp": np.array([p[3] for p in pending], np.float32),
                             "reward": np.full(len(pending), reward, np.float32)})  # fmt: skip

    def decay_noise(self) -> None:
        """No schedule: the policy's spread is learned."""

    def learn(self, n: int = 1) -> tuple[float, float]:
        """Update once `episodes_per_update` explored episodes are in: (value loss, policy loss); else (0, 0).

        `n` (the search loop's per-step update count) is not used: PPO's work is epochs over a batch.
        """
        if len(self.rollout) < self.cfg.episodes_per_update:
            return 0.0, 0.0
        batch = {k: torch.from_numpy(np.concatenate([e[k] for e in self.rollout])) for k in self.rollout[0]}
        self.rollout = []
        with one_thread():
            return self._update(batch)

    def _update(self, b: dict[str, Tensor]) -> tuple[float, float]:
        cfg = self.cfg
        with torch.no_grad():
            s0 = torch.cat([self.source()[b["step"]], b["dyn"]], dim=1)
            adv = b["reward"] - self.value(s0)
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-6)
        v_loss = p_loss = torch.zeros(())
        for _ in range(cfg.epochs):
            table = self.source()
            s = torch.cat([table[b["step"]], b["dyn"]], dim=1)
            alpha, beta = self.actor(s)
            dist = Beta(alpha, beta)
            ratio = torch.exp(dist.log_prob(b["x"]) - b["logp"])
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
            p_loss = -surrogate.mean() - cfg.entropy * dist.entropy().mean()
            self.actor_opt.zero_grad()
            if self.source_opt is not None:
                self.source_opt.zero_grad()
            p_loss.backward()
            nn.utils.clip_grad_norm_([*self.actor.parameters(), *self.source_params], cfg.max_grad_norm)
            self.actor_opt.step()
            if self.source_opt is not None:
                self.source_opt.step()
            v_loss = nn.functional.mse_loss(self.value(s.detach()), b["reward"])
            self.value_opt.zero_grad()
            v_loss.backward()
            self.value_opt.step()
        self._table = None
        return float(v_loss.detach()), float(p_loss.detach())

    # persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimisers, the pending batch, RNG."""
        return {
            "agent": "ppo",
            "config": asdict(self.cfg),
            "nets": {k: getattr(self, k).state_dict() for k in ("source", "actor", "value")},
            "actor_opt": self.actor_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "source_opt": self.source_opt.state_dict() if self.source_opt is not None else None,
            "rollout": [dict(e) for e in self.rollout],
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        for k, v in d["nets"].items():
            getattr(self, k).load_state_dict(v)
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.value_opt.load_state_dict(d["value_opt"])
        if self.source_opt is not None and d.get("source_opt") is not None:
            self.source_opt.load_state_dict(d["source_opt"])
        self.rollout = [dict(e) for e in d["rollout"]]
        self.rng.bit_generator.state = d["rng"]
        self._pending, self._table = [], None

    def policy_dict(self) -> dict[str, Any]:
        """What --save-policy writes: the state source's trainable part, policy and value networks."""
        return {**policy_header("ppo", self.source, self.cfg), "actor": self.actor.state_dict(),
                "value": self.value.state_dict()}  # fmt: skip

    def load_policy(self, d: dict[str, Any]) -> None:
        """Start from a saved PPO policy (another model's is fine: sizes do not depend on the model)."""
        load_policy_source(d, "ppo", self.source)
        self.actor.load_state_dict(d["actor"])
        self.value.load_state_dict(d["value"])
        self._table = None
