"""The search loop shared by agmc, amc and random: episodes, rewards, checkpoints, resume, Ctrl-C."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agmc_onnx.errors import InputError
from agmc_onnx.io import write_bytes
from agmc_onnx.rl.ddpg import DDPG
from agmc_onnx.rl.env import PruningEnv
from agmc_onnx.rl.ppo import PPO

CHECKPOINT = "search.pt"
# Default random warm-up: a third of the episodes, at most 66. ResNet-56, 300 episodes, agmc: a third (100
# episodes, the DDPG replay ring then holds only random episodes when learning starts) stalled near the
# warm-up's best (best reward 0.796 / 0.870 on seeds 0 / 1), 66 reached 0.935 / 0.932; amc 0.920 either way.
MAX_DEFAULT_WARMUP = 66


def default_warmup(agent: DDPG | PPO | None, episodes: int) -> int:
    """Random warm-up episodes when none are asked for: none for an on-policy agent (PPO learns only
    from its own draws), else a third of the episodes, at most MAX_DEFAULT_WARMUP."""
    return 0 if getattr(agent, "on_policy", False) else min(episodes // 3, MAX_DEFAULT_WARMUP)


@dataclass
class Episode:
    """One episode of the curve."""

    episode: int
    reward: float
    macs_ratio: float
    ratios: list[float]
    seconds: float
    best: float
    kind: str  # "random" (warm-up / random search), "explore" (policy + noise) or "greedy"


@dataclass
class SearchResult:
    """The best plan found (keep counts per group id) and the whole curve."""

    group_ids: list[int]
    sizes: list[int]
    best_counts: dict[int, int]
    best_reward: float
    best_episode: int
    curve: list[Episode] = field(default_factory=list)
    interrupted: bool = False
    resumed_from: int | None = None

    def best_ratios(self) -> dict[int, float]:
        """Keep ratio per group id of the best plan."""
        return {g: self.best_counts[g] / s for g, s in zip(self.group_ids, self.sizes, strict=True)}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the curve and the best plan."""
        return {
            "best_reward": self.best_reward,
            "best_episode": self.best_episode,
            "best_counts": {str(g): c for g, c in self.best_counts.items()},
            "best_ratios": {str(g): r for g, r in self.best_ratios().items()},
            "episodes": len(self.curve),
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
            "curve": [asdict(e) for e in self.curve],
        }


class Search:
    """Runs `episodes` episodes of `env` scored by `score(counts)`; `agent=None` is random search.

    With an agent, the first `warmup` episodes (default: `default_warmup`) take uniform random
    actions (inside the action wall), then the policy explores (DDPG: truncated-normal noise
    decaying by `noise_decay` per episode from the end of warm-up, down to `noise_floor`; PPO:
    draws from its Beta policy) and learns after every episode (DDPG: one update per step; PPO:
    once per batch of episodes). `episodes=0` with an agent plays one
    greedy episode (a loaded policy used zero-shot). Every finished episode is checkpointed in
    `checkpoint/search.pt` when a directory is given; `run(resume=True)` continues from it and
    reaches the same result as an uninterrupted run. Ctrl-C stops after the running episode's
    checkpoint and returns the best plan so far.
    """

    def __init__(
        self,
        env: PruningEnv,
        score: Callable[[Mapping[int, int]], float],
        agent: DDPG | PPO | None = None,
        episodes: int = 300,
        warmup: int | None = None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        progress: Callable[[Episode], None] | None = None,
    ) -> None:
        self.env = env
        self.score_fn = score
        self.agent = agent
        self.episodes = episodes
        self.warmup = default_warmup(agent, episodes) if warmup is None else warmup
        self.rng = np.random.default_rng(seed)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.fingerprint = dict(fingerprint or {})
        self.fingerprint.update(groups=list(env.group_ids), sizes=list(env.sizes), target=env.target, seed=seed)
        self.progress = progress
        self._cache: dict[tuple[int, ...], float] = {}

    def _score(self, counts: Mapping[int, int]) -> float:
        """Score a plan, memoised (plans repeat, especially once the policy converges)."""
        key = tuple(counts[g] for g in self.env.group_ids)
        if key not in self._cache:
            self._cache[key] = float(self.score_fn(dict(counts)))
        return self._cache[key]

    def _episode(self, mode: str) -> tuple[dict[int, int], float, list[Any]]:
        """Play one episode; returns (counts, reward, transitions)."""
        env, agent = self.env, self.agent
        dyn = env.reset()
        if agent is not None:
            agent.begin_episode()
        transitions = []
        done = env.steps == 0
        while not done:
            t, size = env.t, env.sizes[env.t]
            lo, hi = env.bounds()
            lo_r, hi_r = lo / size, hi / size
            if mode == "random" or agent is None:
                a = env.a_min + (1 - env.a_min) * float(self.rng.random()) if agent is None else agent.random_action()
            else:
                a = agent.act(t, dyn, explore=mode == "explore", lo=lo_r, hi=hi_r)
            count, ndyn, done = env.step(a)
            transitions.append((t, dyn, count / size, min(t + 1, env.steps - 1), ndyn, done))
            dyn = ndyn
        counts = dict(env.chosen)
        return counts, self._score(counts), transitions

    def run(self, resume: bool = False) -> SearchResult:
        """Run (or continue) the search."""
        env = self.env
        result = SearchResult(list(env.group_ids), list(env.sizes), {}, -float("inf"), -1)
        start = 0
        if resume:
            start = self._load(result)
        if self.agent is not None and self.episodes == 0 and not result.curve:
            self._play(result, 0, "greedy")
            return result
        ep = start
        try:
            for ep in range(start, self.episodes):
                mode = "random" if self.agent is None or ep < self.warmup else "explore"
                self._play(result, ep, mode)
        except KeyboardInterrupt:
            result.interrupted = True
        return result

    def _play(self, result: SearchResult, ep: int, mode: str) -> None:
        """One episode: act, score, learn, record, checkpoint."""
        t0 = time.perf_counter()
        counts, reward, transitions = self._episode(mode)
        agent = self.agent
        if agent is not None and mode != "greedy":
            agent.observe_episode(transitions, reward)
            if mode == "explore":
                agent.learn(len(transitions) * agent.cfg.updates_per_step)
                agent.decay_noise()
        if reward > result.best_reward:
            result.best_reward, result.best_counts, result.best_episode = reward, counts, ep
        ratios = [counts[g] / s for g, s in zip(self.env.group_ids, self.env.sizes, strict=True)]
        rec = Episode(ep, reward, self.env.macs(counts) / self.env.total, ratios, time.perf_counter() - t0, result.best_reward, mode)
        result.curve.append(rec)
        self._save(result, ep + 1)
        if self.progress:
            self.progress(rec)

    def _save(self, result: SearchResult, next_episode: int) -> None:
        """Write the checkpoint atomically (tmp file + rename)."""
        if self.checkpoint is None:
            return
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self.fingerprint,
            "next_episode": next_episode,
            "agent": self.agent.state_dict() if self.agent is not None else None,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "result": result.to_json(),
            "best_counts": dict(result.best_counts),
        }
        buf = io.BytesIO()  # kept out of the run's staged outputs: a checkpoint outlives a failed run (--resume)
        torch.save(state, buf)
        write_bytes(buf.getvalue(), self.checkpoint / CHECKPOINT)

    def _load(self, result: SearchResult) -> int:
        """Restore from the checkpoint; returns the episode to continue from (0 without one)."""
        if self.checkpoint is None or not (self.checkpoint / CHECKPOINT).exists():
            return 0
        path = self.checkpoint / CHECKPOINT
        state = read_checkpoint(path)
        if state["fingerprint"] != self.fingerprint:
            raise InputError("the checkpoint belongs to another search (model, target, seed or strategy differ)", self.checkpoint)
        try:
            if self.agent is not None and state["agent"] is not None:
                self.agent.load_state_dict(state["agent"])
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            saved = state["result"]
            result.curve = [Episode(**e) for e in saved["curve"]]
            result.best_reward, result.best_episode = saved["best_reward"], saved["best_episode"]
            result.best_counts = {int(g): int(c) for g, c in state["best_counts"].items()}
            result.resumed_from = state["next_episode"]
            return int(state["next_episode"])
        except Exception as exc:  # a checkpoint with the right keys whose contents do not fit this search
            raise InputError(f"the search checkpoint does not fit this search, another search's or corrupt "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})", path) from exc


CHECKPOINT_KEYS = frozenset({"fingerprint", "next_episode", "agent", "rng", "torch_rng", "result", "best_counts"})


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A search checkpoint as written by `Search._save`; anything else is an InputError naming the file."""
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # UnpicklingError, "PytorchStreamReader failed", unsupported protocol, OSError
        raise InputError(f"cannot read the search checkpoint: corrupt or truncated ({type(exc).__name__}); "
                         "remove it to start the search again", path) from exc
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        got = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise InputError(f"not a search checkpoint written by agmc-onnx (it holds {got}); a foreign file", path)
    return state
