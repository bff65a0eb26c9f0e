"""The search loop shared by agmc, amc and random: batches of episodes, rewards, checkpoints, resume, Ctrl-C."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
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
from agmc_onnx.rl.scoring import Scored, ScoreMany

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
    worker: int | None = None  # the scorer that scored the candidate (None: a plan scored before, memoised)
    score_seconds: float = 0.0  # that scorer's time on it



@dataclass
class _Played:
    """An episode acted but not yet learned from: its plan, its steps and what the agent drew for it."""

    episode: int
    mode: str
    counts: dict[int, int]
    transitions: list[Any]
    drawn: Any


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
    greedy episode (a loaded policy used zero-shot).

    Episodes run in batches of `batch` (K): the K episodes are acted one after the other with the
    same policy, each with its own draws (noise, random actions), their K candidates are scored
    together (`score_many`, e.g. on parallel workers; else one by one), then the agent observes and
    learns from them in episode order, doing the updates those K episodes pay for. K=1 is the
    one-episode-at-a-time search exactly (learning reads no noise, so decaying it right after each
    episode is acted changes nothing). Random search and random warm-up episodes give the same
    plans for every K. Every finished batch is checkpointed in `checkpoint/search.pt` when a
    directory is given; `run(resume=True)` continues from it and reaches the same result as an
    uninterrupted run with the same K. Ctrl-C stops after the running batch's checkpoint (or
    drops an unfinished batch) and returns the best plan so far.
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
        batch: int = 1,
        score_many: ScoreMany | None = None,
    ) -> None:
        if batch < 1:
            raise InputError(f"episodes per batch must be >= 1, not {batch}")
        self.env = env
        self.score_fn = score
        self.score_many = score_many
        self.agent = agent
        self.episodes = episodes
        self.warmup = default_warmup(agent, episodes) if warmup is None else warmup
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.fingerprint = dict(fingerprint or {})
        self.fingerprint.update(groups=list(env.group_ids), sizes=list(env.sizes), target=env.target, seed=seed)
        if batch != 1:  # K=1 checkpoints stay what they were
            self.fingerprint["batch_episodes"] = batch
        self.progress = progress
        self._cache: dict[tuple[int, ...], float] = {}

    def _key(self, counts: Mapping[int, int]) -> tuple[int, ...]:
        return tuple(counts[g] for g in self.env.group_ids)

    def _score_batch(self, plans: Sequence[Mapping[int, int]]) -> list[Scored]:
        """Score every plan not seen before (each distinct one once, together), in the given order; memoised,
        as plans repeat once the policy converges."""
        fresh: dict[tuple[int, ...], Mapping[int, int]] = {}
        for counts in plans:
            key = self._key(counts)
            if key not in self._cache:
                fresh.setdefault(key, counts)
        done: dict[tuple[int, ...], Scored] = {}
        if fresh:
            if self.score_many is not None:
                scored = self.score_many([dict(c) for c in fresh.values()])
            else:
                scored = []
                for counts in fresh.values():
                    t0 = time.perf_counter()
                    reward = float(self.score_fn(dict(counts)))
                    scored.append(Scored(reward, 0, time.perf_counter() - t0))
            for key, s in zip(fresh, scored, strict=True):
                self._cache[key] = float(s.reward)
                done[key] = s
        out = []
        for counts in plans:
            key = self._key(counts)
            out.append(done.pop(key, None) or Scored(self._cache[key], None, 0.0))
        return out

    def _act(self, ep: int, mode: str) -> _Played:
        """Act one episode (no scoring, no learning); DDPG's noise decays after an explored one."""
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
            if agent is not None and hasattr(agent, "applied"):
                agent.applied(t, count / size)  # per-step re-encoded states read the ratios applied so far
            transitions.append((t, dyn, count / size, min(t + 1, env.steps - 1), ndyn, done))
            dyn = ndyn
        drawn = None
        if agent is not None:
            drawn = agent.end_episode()
            if mode == "explore":
                agent.decay_noise()
        return _Played(ep, mode, dict(env.chosen), transitions, drawn)

    def run(self, resume: bool = False) -> SearchResult:
        """Run (or continue) the search."""
        env = self.env
        result = SearchResult(list(env.group_ids), list(env.sizes), {}, -float("inf"), -1)
        start = 0
        if resume:
            start = self._load(result)
        if self.agent is not None and self.episodes == 0 and not result.curve:
            self._play(result, [(0, "greedy")])
            return result
        ep = start
        try:
            while ep < self.episodes:
                end = min(self.episodes, (ep // self.batch + 1) * self.batch)
                self._play(result, [(e, self._mode(e)) for e in range(ep, end)])
                ep = end
        except KeyboardInterrupt:
            result.interrupted = True
        return result

    def _mode(self, ep: int) -> str:
        return "random" if self.agent is None or ep < self.warmup else "explore"

    def _play(self, result: SearchResult, batch: list[tuple[int, str]]) -> None:
        """One batch: act every episode, score the candidates together, learn in episode order, record, checkpoint."""
        t0 = time.perf_counter()
        played = [self._act(ep, mode) for ep, mode in batch]
        scored = self._score_batch([p.counts for p in played])
        agent = self.agent
        for p, s in zip(played, scored, strict=True):
            if agent is not None and p.mode != "greedy":
                agent.observe_episode(p.transitions, s.reward, p.drawn)
                if p.mode == "explore":
                    agent.learn(len(p.transitions) * agent.cfg.updates_per_step)
        seconds = (time.perf_counter() - t0) / len(played)
        records = []
        for p, s in zip(played, scored, strict=True):
            if s.reward > result.best_reward:
                result.best_reward, result.best_counts, result.best_episode = s.reward, p.counts, p.episode
            ratios = [p.counts[g] / size for g, size in zip(self.env.group_ids, self.env.sizes, strict=True)]
            records.append(Episode(p.episode, s.reward, self.env.macs(p.counts) / self.env.total, ratios, seconds,
                                   result.best_reward, p.mode, s.worker, s.seconds))  # fmt: skip
        result.curve.extend(records)
        self._save(result, played[-1].episode + 1)
        if self.progress:
            for rec in records:
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
        saved = dict(state["fingerprint"])  # one from before the encoder choice trained agmc's GNN
        saved.setdefault("encoder", "trained" if saved.get("strategy") == "agmc" else None)
        if saved != self.fingerprint:
            raise InputError("the checkpoint belongs to another search (model, target, seed, strategy or episodes "
                             "per batch, i.e. --workers, differ)", self.checkpoint)  # fmt: skip
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
