"""Search strategies' shared driver: context -> environment, state source, agent, Search -> Plan."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from agmc_onnx.budget import latency_limit, macs_target
from agmc_onnx.errors import InputError
from agmc_onnx.io import write_bytes
from agmc_onnx.plan import ImportanceCache, Plan, plan_from_counts
from agmc_onnx.rl import ENCODERS
from agmc_onnx.rl.ddpg import DDPG, DDPGConfig
from agmc_onnx.rl.env import PruningEnv
from agmc_onnx.rl.ppo import PPO, PPOConfig
from agmc_onnx.rl.scoring import Scored
from agmc_onnx.rl.search import Search, SearchResult
from agmc_onnx.rl.states import DECODERS, HandStates

DEFAULT_EPISODES = 300
DEFAULT_A_MIN = 0.2  # AMC's lower bound on the kept fraction of a layer


AGENTS = {"ddpg": (DDPG, DDPGConfig), "ppo": (PPO, PPOConfig)}


def resolved_encoder(options: Mapping[str, Any]) -> str:
    """'frozen' (the GNN stays as the seed built it; only the agent learns) or 'trained' (with the actor, as
    in the paper). 'auto': frozen for the per-group decoder, where the held-out table measured it ahead of
    both the trained GNN and amc (issue 19), trained for the other decoders (frozen not measured there)."""
    encoder = options.get("encoder", "auto")
    if encoder not in ENCODERS:
        raise InputError(f"unknown encoder {encoder!r} (available: {', '.join(ENCODERS)})")
    if encoder == "auto":
        return "frozen" if options.get("decoder", "groups") == "groups" else "trained"
    return str(encoder)


def build_agent(kind: str, analysis: Any, steps: int, seed: int, options: dict[str, Any]) -> DDPG | PPO:
    """A DDPG (default) or PPO agent over the GNN ('agmc') or AMC's hand-made features ('amc')."""
    agent_name = options.get("agent", "ddpg")
    if agent_name not in AGENTS:
        raise InputError(f"unknown agent {agent_name!r} (available: {', '.join(AGENTS)})")
    agent_cls, config_cls = AGENTS[agent_name]
    torch.manual_seed(seed)
    decoder = options.get("decoder", "groups")
    if decoder not in DECODERS:
        raise InputError(f"unknown decoder {decoder!r} (available: {', '.join(DECODERS)})")
    if decoder == "stepwise" and kind == "agmc" and agent_name != "ddpg":
        raise InputError("--decoder stepwise (per-step re-encoding) works with the DDPG agent only")
    source = DECODERS[decoder](analysis, standardize=bool(options.get("standardize", True))) if kind == "agmc" else HandStates(analysis)
    overrides = {k: options[k] for k in config_cls.__dataclass_fields__ if k in options}
    overrides.setdefault("a_min", options.get("a_min", DEFAULT_A_MIN))
    if kind == "agmc" and resolved_encoder(options) == "frozen":
        overrides.setdefault("lr_encoder", 0.0)  # an explicit lr_encoder (benchmark variants) wins
    return agent_cls(source, steps, config_cls(**overrides), seed=seed)


def load_policy(path: str | Path, kind: str) -> dict[str, Any]:
    """Read a --save-policy file and check that it was made by the same strategy; errors name the file."""
    try:
        policy = torch.load(path, weights_only=False)
    except Exception as exc:  # UnpicklingError, "PytorchStreamReader failed", unsupported protocol, OSError
        raise InputError(f"cannot read the policy: not a readable policy file, corrupt or truncated "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})", path) from exc
    if not isinstance(policy, dict) or policy.get("kind") != kind:
        got = policy.get("kind") if isinstance(policy, dict) else type(policy).__name__
        raise InputError(f"this policy was saved by strategy {got!r}, not {kind!r}", path)
    return policy


def start_from_policy(agent: DDPG | PPO, path: str | Path, kind: str) -> None:
    """Load a policy file into `agent`; a policy of another agent, decoder or shape is an error naming the file."""
    policy = load_policy(path, kind)
    try:
        agent.load_policy(policy)
    except InputError as exc:
        raise exc if exc.path is not None else InputError(str(exc), path) from exc
    except Exception as exc:  # missing keys, tensors of other sizes
        raise InputError(f"this policy does not fit the {kind} agent ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''})", path) from exc


def run_search(ctx: Any, kind: str) -> tuple[Plan, SearchResult]:
    """Run the `kind` search ('agmc', 'amc' or 'random') described by a StrategyContext."""
    limit_ms = latency_limit(ctx.budget, ctx.latency, ctx.path)
    target = macs_target(ctx.budget, limit_ms)
    opts = dict(ctx.options)
    if ctx.evaluator is None:
        raise InputError(f"strategy {kind!r} scores candidates on data: give --data DIR", ctx.path)
    analysis = ctx.analysis
    env = PruningEnv.from_analysis(analysis, target, ctx.round_to, float(opts.get("a_min", DEFAULT_A_MIN)),
                                   ctx.latency if limit_ms is not None else None, limit_ms)
    if env.steps == 0:
        raise InputError("nothing prunable: every channel group is frozen", ctx.path)
    episodes = int(opts.get("episodes", DEFAULT_EPISODES))
    if episodes < 0:
        raise InputError(f"--episodes must be >= 0, not {episodes}")
    agent = None if kind == "random" else build_agent(kind, analysis, env.steps, ctx.seed, opts)
    warmup = opts.get("warmup")
    if agent is not None and opts.get("policy"):
        start_from_policy(agent, opts["policy"], kind)
        warmup = 0 if warmup is None else warmup  # a warm start needs no random warm-up
    if kind == "random" and episodes == 0:
        raise InputError("strategy 'random' needs --episodes >= 1")
    cache = ImportanceCache(analysis, ctx.importance)
    evaluator = ctx.evaluator
    if callable(getattr(evaluator, "start", None)):  # scorer workers start now: after any latency tables
        evaluator.start()

    def score(counts: dict[int, int]) -> float:
        return float(evaluator.score(plan_from_counts(analysis, counts, cache)))

    score_many = None
    if callable(getattr(evaluator, "score_many", None)):

        def score_many(plans: Sequence[Mapping[int, int]]) -> list[Scored]:
            return evaluator.score_many([plan_from_counts(analysis, dict(c), cache) for c in plans])

    batch = int(opts.get("batch_episodes") or getattr(evaluator, "workers", 1))
    fingerprint = {"strategy": kind, "latency_limit_ms": limit_ms, "episodes_warmup": warmup, "round_to": ctx.round_to,
                   "importance": ctx.importance, "bn": getattr(ctx.evaluator, "bn_recalibrated", None),
                   "decoder": opts.get("decoder", "groups") if kind == "agmc" else None,
                   "encoder": resolved_encoder(opts) if kind == "agmc" else None,
                   "agent": opts.get("agent", "ddpg") if agent is not None else None}
    search = Search(env, score, agent, episodes, None if warmup is None else int(warmup), ctx.seed,
                    opts.get("checkpoint"), fingerprint, opts.get("progress"), batch, score_many)
    result = search.run(resume=bool(opts.get("resume")))
    if not result.best_counts:
        raise InputError("the search was interrupted before its first episode ended", ctx.path)
    if agent is not None and opts.get("save_policy"):
        buf = io.BytesIO()  # written by the one writer: atomic, the umask's mode, staged with the run's outputs
        torch.save(agent.policy_dict(), buf)
        write_bytes(buf.getvalue(), opts["save_policy"])
    plan = plan_from_counts(analysis, result.best_counts, cache)
    plan.ratios = result.best_ratios()
    if callable(opts.get("on_result")):
        opts["on_result"](result)
    return plan, result


class SearchStrategy:
    """Base of the three search strategies: propose() runs the search; `result` keeps its curve."""

    name = "search"

    def __init__(self) -> None:
        self.result: SearchResult | None = None
        self.notes: list[str] = []

    def propose(self, ctx: Any) -> Plan:
        """The best plan the search found (also on Ctrl-C: the best so far)."""
        plan, self.result = run_search(ctx, self.name)
        if self.result.interrupted:
            self.notes.append(f"search interrupted after {len(self.result.curve)} episodes: best plan so far written")
        return plan
