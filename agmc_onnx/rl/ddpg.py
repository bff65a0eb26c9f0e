"""DDPG (AMC / AGMC): actor, critic, target networks, replay buffer, truncated-normal exploration.

Each episode prunes every prunable group once, in topological order, the final reward copied to every
step minus a moving-average baseline; the critic's target is the Monte-Carlo return (`gamma=0`). Where and
why it departs from AMC's code (noise floor, elite replay, critic warm-up, the encoder trained once per
learning phase through the actor only), each with its measurement: docs/ddpg.md.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agmc_onnx.rl.env import DYN_FEATURES
from agmc_onnx.rl.policy import load_policy_source, policy_header
from agmc_onnx.rl.states import source_optimizer


@dataclass
class DDPGConfig:
    """Hyper-parameters; defaults follow AMC / AGMC."""

    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    lr_encoder: float | None = None  # the state source's Adam (None: lr_actor; 0: the encoder stays as built)
    tau: float = 0.01
    batch: int = 64
    gamma: float = 0.0
    init_noise: float = 0.5
    noise_decay: float = 0.95
    noise_floor: float = 0.1  # exploration never decays below this (AMC's code has none: 0.5 * 0.95^60 ~ 0.02)
    moving_alpha: float = 0.5
    buffer_episodes: int = 100
    elite_episodes: int = 10  # the best k episodes stay in the replay after the ring overwrites them (AMC: 0)
    init_action: float | None = None  # the actor's initial mean keep ratio (None: sigmoid(0), untouched init)
    a_min: float = 0.05
    updates_per_step: int = 1
    encoder_schedule: str = "episode"  # "episode": one encoder step per learn(); "update": one per minibatch
    critic_warmup: int = 300  # critic-only minibatch updates before the first actor update, on the warm-up's data (AMC: 0)


class Actor(nn.Module):
    """mu(s) -> keep ratio in [a_min, 1] (sigmoid, rescaled)."""

    def __init__(self, dim: int, hidden: int, a_min: float) -> None:
        super().__init__()
        self.a_min = a_min
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, s: Tensor) -> Tensor:
        """[B, dim] -> [B]."""
        return self.a_min + (1 - self.a_min) * torch.sigmoid(self.net(s).squeeze(-1))


class Critic(nn.Module):
    """Q(s, a) -> [B]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        """Value of action a in state s."""
        return self.net(torch.cat([s, a.unsqueeze(-1)], dim=-1)).squeeze(-1)


class ReplayBuffer:
    """A ring buffer of transitions (step index, dynamic features, action, reward, next, done; with `prefix`
    > 0 also the keep ratios applied before the step, which a per-step re-encoded state is read from)."""

    def __init__(self, capacity: int, dyn: int = DYN_FEATURES, prefix: int = 0) -> None:
        self.capacity = capacity
        self.names: tuple[str, ...] = ("step", "dyn", "action", "reward", "next_step", "next_dyn", "done")
        if prefix:
            self.prefix = np.ones((capacity, prefix), np.float32)
            self.names += ("prefix",)
        self.step = np.zeros(capacity, np.int64)
        self.dyn = np.zeros((capacity, dyn), np.float32)
        self.action = np.zeros(capacity, np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_step = np.zeros(capacity, np.int64)
        self.next_dyn = np.zeros((capacity, dyn), np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size = 0
        self.pos = 0

    def add(self, step: int, dyn: np.ndarray, action: float, reward: float, next_step: int, next_dyn: np.ndarray, done: bool,
            prefix: np.ndarray | None = None) -> None:  # fmt: skip
        """Append one transition, overwriting the oldest when full."""
        i = self.pos
        if prefix is not None:
            self.prefix[i] = prefix
        self.step[i], self.dyn[i], self.action[i], self.reward[i] = step, dyn, action, reward
        self.next_step[i], self.next_dyn[i], self.done[i] = next_step, next_dyn, float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """n transitions drawn uniformly with replacement."""
        idx = rng.integers(0, self.size, size=n)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in self.names}

    def state_dict(self) -> dict[str, Any]:
        """Arrays and cursor, for checkpoints."""
        return {"arrays": {k: getattr(self, k)[: self.size].copy() for k in self.names}, "size": self.size,
                "pos": self.pos}  # fmt: skip

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        for k, v in d["arrays"].items():
            getattr(self, k)[: len(v)] = v
        self.size, self.pos = d["size"], d["pos"]


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float, lo: float, hi: float) -> float:
    """A draw of N(mean, sigma) truncated to [lo, hi] (inverse-CDF, exact)."""
    if sigma <= 0 or hi <= lo:
        return float(min(max(mean, lo), hi))
    cdf = lambda x: 0.5 * (1 + math.erf((x - mean) / (sigma * math.sqrt(2))))  # noqa: E731
    a, b = cdf(lo), cdf(hi)
    if b - a < 1e-12:
        return float(lo if mean < lo else hi)
    u = a + (b - a) * rng.random()
    x = mean + sigma * math.sqrt(2) * _erfinv(2 * u - 1)
    return float(min(max(x, lo), hi))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Small networks run faster on one thread than fighting the evaluator for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _erfinv(y: float) -> float:
    """Inverse error function (torch's, in double precision)."""
    return float(torch.erfinv(torch.tensor(min(max(y, -1 + 1e-15), 1 - 1e-15), dtype=torch.float64)))


class DDPG:
    """The agent: acts per step from [static state row, dynamic features], learns from episodes."""

    def __init__(self, source: nn.Module, steps: int, config: DDPGConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or DDPGConfig()
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.source = source
        self.steps = steps
        dim = source.dim + DYN_FEATURES
        self.actor = Actor(dim, self.cfg.hidden, self.cfg.a_min)
        if self.cfg.init_action is not None:
            q = (min(max(self.cfg.init_action, self.cfg.a_min + 1e-3), 1 - 1e-3) - self.cfg.a_min) / (1 - self.cfg.a_min)
            with torch.no_grad():
                self.actor.net[-1].bias.fill_(math.log(q / (1 - q)))
        self.critic = Critic(dim, self.cfg.hidden)
        self.source_target = copy.deepcopy(source)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        for net in (self.source_target, self.actor_target, self.critic_target):
            net.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.source_params, self.source_opt = source_optimizer(source, self.cfg.lr_encoder, self.cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr_critic)
        # per-step re-encoding (StepGraphStates): states are read from the ratios applied before each step
        self.stepwise = bool(getattr(source, "stepwise", False))
        if self.stepwise and self.cfg.gamma > 0:
            raise ValueError("per-step re-encoded states learn from Monte-Carlo returns only (gamma=0)")
        self.prefix_len = steps if self.stepwise else 0
        self.buffer = ReplayBuffer(max(self.cfg.batch, self.cfg.buffer_episodes * steps), prefix=self.prefix_len)
        self.elite = ReplayBuffer(max(1, self.cfg.elite_episodes * steps), prefix=self.prefix_len)
        self.elite_rewards: list[float] = []  # one per episode held in `elite`, best first
        self.moving_average: float | None = None
        self.noise = self.cfg.init_noise
        self.critic_warmed = self.cfg.critic_warmup < 1
        self._table: Tensor | None = None

    # acting -------------------------------------------------------------------------------
    def begin_episode(self) -> None:
        """Encode the model once for this episode's steps (no gradient, one thread)."""
        with one_thread(), torch.no_grad():
            self._table = self.source()
        self._prefix = np.ones(self.steps, np.float32)

    def act(self, step: int, dyn: np.ndarray, explore: bool, lo: float = 0.0, hi: float = 1.0) -> float:
        """The actor's keep ratio for `step`, with truncated-normal noise when exploring."""
        if self._table is None:
            self.begin_episode()
        assert self._table is not None
        if self.stepwise:
            with one_thread(), torch.no_grad():
                row = self.source.rows(torch.tensor([step]), torch.from_numpy(self._prefix).unsqueeze(0))[0]
        else:
            row = self._table[step]
        s = torch.cat([row, torch.from_numpy(dyn)]).unsqueeze(0)
        with torch.no_grad():
            mu = float(self.actor(s)[0])
        if not explore:
            return mu
        return truncated_normal(self.rng, mu, self.noise, max(self.cfg.a_min, lo), min(1.0, hi))

    def random_action(self, lo: float = 0.0, hi: float = 1.0) -> float:
        """A uniform keep ratio in [max(a_min, lo), min(1, hi)] (warm-up)."""
        lo, hi = max(self.cfg.a_min, lo), min(1.0, hi)
        return float(lo + (hi - lo) * self.rng.random()) if hi > lo else float(hi)

    def applied(self, step: int, ratio: float) -> None:
        """The keep ratio the environment applied at `step` (the action wall may have moved the action)."""
        if self.stepwise:
            self._prefix[step] = ratio

    def end_episode(self) -> None:
        """An episode was acted: nothing of it is kept apart from its transitions (PPO keeps its draws)."""
        return None

    # learning -----------------------------------------------------------------------------
    def observe_episode(self, transitions: list[tuple[int, np.ndarray, float, int, np.ndarray, bool]], reward: float,
                        drawn: Any = None) -> None:  # fmt: skip
        """Store an episode's steps, each with the episode's final reward (`drawn`: end_episode()'s, unused)."""
        for (step, dyn, action, nstep, ndyn, done), prefix in zip(transitions, self._prefixes(transitions), strict=True):
            self.buffer.add(step, dyn, action, reward, nstep, ndyn, done, prefix)
        self._keep_elite(transitions, reward)

    def _prefixes(self, transitions: list[tuple[int, np.ndarray, float, int, np.ndarray, bool]]) -> list[Any]:
        """Per transition, the ratios applied before its step (None without per-step re-encoding)."""
        if not self.stepwise:
            return [None] * len(transitions)
        ratios, out = np.ones(self.steps, np.float32), []
        for step, _, action, *_ in transitions:
            out.append(ratios.copy())
            ratios[step] = action
        return out

    def _keep_elite(self, transitions: list[tuple[int, np.ndarray, float, int, np.ndarray, bool]], reward: float) -> None:
        """Keep the episode among the best `elite_episodes` (rebuilt in order, best first)."""
        k = self.cfg.elite_episodes
        if k < 1 or len(transitions) != self.steps or (len(self.elite_rewards) >= k and reward <= self.elite_rewards[-1]):
            return
        pos = sum(1 for r in self.elite_rewards if r >= reward)
        old = self.elite.state_dict()["arrays"]
        n = self.steps
        episodes = [{key: v[i * n:(i + 1) * n] for key, v in old.items()} for i in range(len(self.elite_rewards))]
        new = {"step": np.array([t[0] for t in transitions]), "dyn": np.stack([t[1] for t in transitions]),
               "action": np.array([t[2] for t in transitions]), "reward": np.full(n, reward),
               "next_step": np.array([t[3] for t in transitions]), "next_dyn": np.stack([t[4] for t in transitions]),
               "done": np.array([float(t[5]) for t in transitions])}  # fmt: skip
        if self.stepwise:
            new["prefix"] = np.stack(self._prefixes(transitions))
        episodes.insert(pos, new)
        self.elite_rewards.insert(pos, reward)
        episodes, self.elite_rewards = episodes[:k], self.elite_rewards[:k]
        self.elite = ReplayBuffer(k * n, prefix=self.prefix_len)
        for ep in episodes:
            for i in range(n):
                self.elite.add(*(ep[key][i] for key in self.elite.names))

    def decay_noise(self) -> None:
        """Exploration noise *= noise_decay, not below noise_floor (called once per episode after warm-up)."""
        self.noise = max(self.cfg.noise_floor, self.noise * self.cfg.noise_decay)

    def update(self) -> tuple[float, float]:
        """One DDPG update on a minibatch (encoder included): (critic loss, actor loss)."""
        return self.learn(1)

    def learn(self, n: int) -> tuple[float, float]:
        """n minibatch updates on one CPU thread, the encoder run once for all (see the module doc)."""
        if self.buffer.size < self.cfg.batch or n < 1:
            return 0.0, 0.0
        with one_thread():
            if not self.critic_warmed:
                self._warm_critic(self.cfg.critic_warmup)
            if self.cfg.encoder_schedule == "update":
                losses = [self._learn_phase(1) for _ in range(n)]
                return losses[-1]
            return self._learn_phase(n)

    def _learn_phase(self, n: int) -> tuple[float, float]:
        """Encode once, n updates reading the same state table, one encoder step with the mean gradient."""
        if self.stepwise:
            return self._learn_stepwise(n)
        table = self.source()
        leaf = table.detach().requires_grad_(self.source_opt is not None)
        t_table = None
        if self.cfg.gamma > 0:
            with torch.no_grad():
                t_table = self.source_target()
        losses = (0.0, 0.0)
        for _ in range(n):
            losses = self._update(leaf, t_table)
        if self.source_opt is not None and leaf.grad is not None:
            self.source_opt.zero_grad()
            table.backward(leaf.grad / n)
            self._step_source(n)
        self._table = None
        return losses

    def _step_source(self, n: int) -> None:
        """One Adam step of the state source with the gradients of n updates, and n soft updates' worth of
        its target network, once."""
        assert self.source_opt is not None
        self.source_opt.step()
        tau = 1 - (1 - self.cfg.tau) ** n
        with torch.no_grad():
            target = list(self.source_target.parameters())
            torch._foreach_mul_(target, 1 - tau)
            torch._foreach_add_(target, list(self.source.parameters()), alpha=tau)

    def _learn_stepwise(self, n: int) -> tuple[float, float]:
        """n updates, each encoding its minibatch's partially pruned graphs (one batched forward), the actor
        losses' encoder gradients accumulated and applied once, as the one-shot table's are."""
        losses = (0.0, 0.0)
        if self.source_opt is not None:
            self.source_opt.zero_grad()
        for _ in range(n):
            losses = self._update(None, None)
        if self.source_opt is not None:
            for p in self.source_params:
                if p.grad is not None:
                    p.grad /= n
            self._step_source(n)
        self._table = None
        return losses

    def _states(self, b: dict[str, Tensor], table: Tensor | None) -> Tensor:
        """The state rows of a minibatch: the table's, or re-encoded from each transition's applied ratios."""
        if self.stepwise:
            return self.source.rows(b["step"], b["prefix"])
        assert table is not None
        return table[b["step"]]

    def _warm_critic(self, n: int) -> None:
        """n critic-only updates (actor and encoder untouched), so the actor starts on a critic fitted to the replay."""
        with torch.no_grad():
            table = None if self.stepwise else self.source()
        for _ in range(n):
            b = self._sample(self.cfg.batch)
            with torch.no_grad():
                rows = self._states(b, table)
            s = torch.cat([rows, b["dyn"]], dim=1)
            self._critic_step(s, b["action"], self._baselined(b["reward"]))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_warmed = True

    def _update(self, table: Tensor | None, t_table: Tensor | None) -> tuple[float, float]:
        """One minibatch update of critic and actor; the actor loss's gradient also lands on `table` (or, with
        per-step re-encoding, on the encoder)."""
        cfg = self.cfg
        b = self._sample(cfg.batch)
        s = torch.cat([self._states(b, table), b["dyn"]], dim=1)
        s_detached = s.detach()
        target = self._baselined(b["reward"])
        if t_table is not None:
            with torch.no_grad():
                ns = torch.cat([t_table[b["next_step"].clamp(max=self.steps - 1)], b["next_dyn"]], dim=1)
                target = target + cfg.gamma * (1 - b["done"]) * self.critic_target(ns, self.actor_target(ns))
        critic_loss = self._critic_step(s_detached, b["action"], target)
        actor_loss = -self.critic(s_detached, self.actor(s)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.soft_update(source=False)
        return float(critic_loss.detach()), float(actor_loss.detach())

    def _baselined(self, r: Tensor) -> Tensor:
        """Rewards minus the moving-average baseline, after moving the baseline towards this batch's mean."""
        mean_r = float(r.mean())
        a = self.cfg.moving_alpha
        self.moving_average = mean_r if self.moving_average is None else self.moving_average + a * (mean_r - self.moving_average)
        return r - self.moving_average

    def _critic_step(self, s: Tensor, action: Tensor, target: Tensor) -> Tensor:
        """One Adam step of the critic towards `target`; returns the loss."""
        loss = nn.functional.mse_loss(self.critic(s, action), target)
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        return loss

    def _sample(self, n: int) -> dict[str, Tensor]:
        """n transitions uniformly from the ring buffer and the elite episodes together.

        Rows are gathered from each buffer by index (no copy of either buffer per minibatch).
        """
        if self.elite.size == 0:
            return self.buffer.sample(n, self.rng)
        idx = self.rng.integers(0, self.buffer.size + self.elite.size, size=n)
        in_ring = idx < self.buffer.size
        out = {}
        for k in self.buffer.names:
            ring, elite = getattr(self.buffer, k), getattr(self.elite, k)
            rows = np.empty((n, *ring.shape[1:]), ring.dtype)
            rows[in_ring] = ring[idx[in_ring]]
            rows[~in_ring] = elite[idx[~in_ring] - self.buffer.size]
            out[k] = torch.from_numpy(rows)
        return out

    def soft_update(self, source: bool = True) -> None:
        """target <- (1 - tau) target + tau online, for actor, critic and (unless told not) the state source."""
        tau = self.cfg.tau
        online = [*self.actor.parameters(), *self.critic.parameters(), *(self.source.parameters() if source else [])]
        target = [*self.actor_target.parameters(), *self.critic_target.parameters(),
                  *(self.source_target.parameters() if source else [])]  # fmt: skip
        with torch.no_grad():
            torch._foreach_mul_(target, 1 - tau)
            torch._foreach_add_(target, online, alpha=tau)

    # persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimisers, buffer, RNG, baseline, noise."""
        return {
            "config": asdict(self.cfg),
            "nets": {k: getattr(self, k).state_dict() for k in self._nets()},
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "source_opt": self.source_opt.state_dict() if self.source_opt is not None else None,
            "buffer": self.buffer.state_dict(),
            "elite": self.elite.state_dict(),
            "elite_rewards": list(self.elite_rewards),
            "rng": self.rng.bit_generator.state,
            "moving_average": self.moving_average,
            "noise": self.noise,
            "critic_warmed": self.critic_warmed,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        for k, v in d["nets"].items():
            getattr(self, k).load_state_dict(v)
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        if self.source_opt is not None and d.get("source_opt") is not None:
            self.source_opt.load_state_dict(d["source_opt"])
        self.buffer.load_state_dict(d["buffer"])
        if "elite" in d:
            self.elite.load_state_dict(d["elite"])
            self.elite_rewards = list(d["elite_rewards"])
        self.rng.bit_generator.state = d["rng"]
        self.moving_average = d["moving_average"]
        self.noise = d["noise"]
        self.critic_warmed = d.get("critic_warmed", True)
        self._table = None

    @staticmethod
    def _nets() -> tuple[str, ...]:
        """Attribute names of the networks."""
        return ("source", "actor", "critic", "source_target", "actor_target", "critic_target")

    def policy_dict(self) -> dict[str, Any]:
        """What --save-policy writes: the state source's trainable part, actor and critic."""
        return {**policy_header("ddpg", self.source, self.cfg), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict()}  # fmt: skip

    def load_policy(self, d: dict[str, Any]) -> None:
        """Start from a saved policy (another model's is fine: sizes do not depend on the model)."""
        load_policy_source(d, "ddpg", self.source)
        self.actor.load_state_dict(d["actor"])
        self.critic.load_state_dict(d["critic"])
        self.source_target.load_state_dict(self.source.state_dict())
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self._table = None
