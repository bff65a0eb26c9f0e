"""Scorers as Ray actors: N workers, each holding the model, the reward split and the calibration images once.

A search episode is one candidate plan scored on data; the agent's own work is a tenth of it. The
pool scores a batch of candidates at once (`score_many`), one per idle worker, and returns the
scores in the candidates' order, so a search is reproducible for a fixed batch size and seed
whatever the number of workers or the order they finish in. A worker that dies (killed, out of
memory) has its candidate re-scored on another worker and is replaced; a scorer that raises
torch's out-of-memory error is tried on another worker too. Scores do not depend on which worker
computed them (same code, same data, one thread each on CPU), so a death does not change the plan.

Ray is optional (`pip install 'agmc-onnx[cpu,ray]'`) and imported only when a pool is built.
Embedded by default: `ray.init` starts a private local instance (quiet: no dashboard, no worker
logs on the terminal, no usage stats; workers at the driver's priority, not Ray's nice 15, which
made scoring 2x slower than in-process on a busy machine), shut down with the pool; `address` joins an existing
cluster (agmc-onnx installed on its nodes; a cluster with token authentication needs RAY_AUTH_MODE=token
and its token here, as any Ray client does: checked with ray 2.60). Each worker gets one GPU when
the cluster has as many GPUs as workers (a share of one otherwise), else one CPU core and one thread.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.rl.scoring import Scored

RAY_EXTRA = "pip install 'agmc-onnx[cpu,ray]'"
MAX_TRIES = 3  # workers a candidate is tried on before the search gives up on it


class Scorer(Protocol):
    """What a worker holds (agmc_onnx.evaluate.Evaluator): scores plans, says how."""

    mode: str
    bn_recalibrated: bool

    def score(self, plan: Any) -> float:
        """Reward of one candidate plan."""
        ...


ScorerFactory = Callable[..., Scorer]  # factory(device=..., threads=...) -> Scorer, run once in each worker


def require_ray(workers: int) -> Any:
    """The ray module, or InputError (exit 2) naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--workers {workers} needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _outputs(scorer: Any) -> list[dict[str, Any]] | None:
    """Each graph output's fidelity form and weight of a fidelity-rewarded scorer (None otherwise)."""
    f = getattr(scorer, "fidelity", None)
    return None if f is None else f.describe()


class ScorerActor:
    """The body of one worker: builds its scorer once (model converted, data on its device), then scores plans."""

    def __init__(self, factory: ScorerFactory, device: str, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.scorer = factory(device=device, threads=threads)

    def describe(self) -> dict[str, Any]:
        """Where the worker runs and how its scorer scores."""
        s = self.scorer
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(getattr(s, "device", self.device)),
                "mode": getattr(s, "mode", None), "bn_recalibrated": getattr(s, "bn_recalibrated", None),
                "threads": getattr(s, "threads", None), "outputs": _outputs(s)}  # fmt: skip

    def score(self, plan: Any) -> tuple[float, float]:
        """(reward, seconds) of one candidate."""
        t0 = time.perf_counter()
        reward = float(self.scorer.score(plan))
        return reward, time.perf_counter() - t0


@dataclass
class WorkerStats:
    """One worker slot: where it runs, what it scored, how often it was replaced."""

    worker: int
    host: str = ""
    pid: int = 0
    device: str = ""
    candidates: int = 0
    seconds: float = 0.0
    restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, with the mean seconds per candidate."""
        return {**asdict(self), "seconds_per_candidate": self.seconds / self.candidates if self.candidates else None}


class ScorerPool:
    """N scorer workers on Ray; `score_many(plans)` scores a batch in parallel, in order. A context manager.

    Workers start on `start()` (the search calls it when it begins, so latency tables measured
    before a search never share the cores with scorers). `device` None: GPUs when the cluster has
    them, else CPU; "cpu" or "cuda" forces one. `max_restarts` (default: 2 per worker) bounds how
    many dead workers are replaced; past it the search goes on with the survivors.
    """

    def __init__(self, factory: ScorerFactory, workers: int, address: str | None = None, device: str | None = None,
                 max_restarts: int | None = None) -> None:  # fmt: skip
        if workers < 1:
            raise InputError(f"--workers must be >= 1, not {workers}")
        self.ray = require_ray(workers)
        self.factory = factory
        self.workers = workers
        self.address = address
        self.device = device
        self.max_restarts = 2 * workers if max_restarts is None else max_restarts
        self.restarts = 0
        self.stats = [WorkerStats(i) for i in range(workers)]
        self.facts: dict[str, Any] = {}
        self._actors: list[Any] = []
        self._idle: deque[int] = deque()
        self._starting: dict[Any, int] = {}  # describe() ref of a replacement -> its slot
        self._owns_ray = False
        self._started = False

    # Evaluator-like facts (the report and the checkpoint fingerprint read these) ------------------
    @property
    def mode(self) -> str | None:
        return self.facts.get("mode")

    @property
    def bn_recalibrated(self) -> bool | None:
        return self.facts.get("bn_recalibrated")

    @property
    def threads(self) -> int | None:
        return self.facts.get("threads")

    @property
    def outputs(self) -> list[dict[str, Any]] | None:
        return self.facts.get("outputs")

    @property
    def calls(self) -> int:
        return sum(s.candidates for s in self.stats)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stats)

    def summary(self) -> dict[str, Any]:
        """The report's account of the workers: where they ran, per-worker scoring time, restarts."""
        return {"count": self.workers, "ray_address": self.address or "embedded", "restarts": self.restarts,
                "per_worker": [s.to_json() for s in self.stats]}  # fmt: skip

    # life cycle ---------------------------------------------------------------------------------
    def __enter__(self) -> ScorerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start Ray (embedded, or join `address`) and every worker; returns when all hold their scorer."""
        if self._started:
            return
        ray = self.ray
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
            if self.address is None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                try:  # Ray starts workers at nice 15; scorers are the run's work: the driver's priority
                    ray.init(address="local", num_cpus=os.cpu_count() or 1, _system_config={"worker_niceness": 0},
                             **quiet)  # fmt: skip
                except Exception as exc:  # Ray's own start-up failures (ports, shared memory, ...)
                    raise AgmcError(f"cannot start Ray on this machine: {_cause(exc)}") from None
            else:
                quiet.pop("include_dashboard")
                try:
                    ray.init(address=self.address, **quiet)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    hint = "" if os.environ.get("RAY_AUTH_MODE") else " (a cluster with token authentication: RAY_AUTH_MODE=token)"
                    raise InputError(f"cannot join the Ray cluster at {self.address}: {exc}{hint}") from None
            self._owns_ray = True
        self._started = True
        free = ray.available_resources()  # what other jobs on a cluster (or other pools) leave
        gpus = float(free.get("GPU", 0)) if self.device != "cpu" else 0.0
        if self.device == "cuda" and not gpus:
            raise InputError("scoring on cuda was asked for, but the Ray cluster has no free GPU")
        cpus = float(free.get("CPU", 0))
        if cpus < 0.01 * self.workers:
            raise InputError(f"the Ray cluster has no free CPU for {self.workers} scoring workers")
        share = lambda have: min(1.0, have / self.workers)  # noqa: E731  one each when there are enough
        self._remote = ray.remote(ScorerActor).options(
            num_cpus=share(cpus), num_gpus=share(gpus) if gpus else 0, max_restarts=0, max_task_retries=0)
        self._device, self._threads = ("cuda", None) if gpus else ("cpu", 1)
        self._factory_ref = ray.put(self.factory)
        self._actors = [self._spawn() for _ in range(self.workers)]
        refs = [a.describe.remote() for a in self._actors]
        try:
            described = ray.get(refs)
        except Exception as exc:  # a scorer that cannot be built is the run's error, not a worker's death
            self.close()
            raise AgmcError(f"a scoring worker failed to start: {_cause(exc)}") from None
        for slot, facts in enumerate(described):
            self._joined(slot, facts)
        self.facts = {k: described[0][k] for k in ("mode", "bn_recalibrated", "threads", "device")}

    def _spawn(self) -> Any:
        return self._remote.remote(self._factory_ref, self._device, self._threads)

    def _joined(self, slot: int, facts: dict[str, Any]) -> None:
        st = self.stats[slot]
        st.host, st.pid, st.device = facts["host"], facts["pid"], facts["device"]
        self._idle.append(slot)

    def close(self) -> None:
        """Stop the workers (and the embedded Ray instance, or leave the cluster)."""
        ray = self.ray
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors, self._idle, self._starting = [], deque(), {}
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = self._started = False

    # scoring ------------------------------------------------------------------------------------
    def score(self, plan: Any) -> float:
        """Reward of one plan (on one worker)."""
        return self.score_many([plan])[0].reward

    def _submit(self, slot: int, plan: Any) -> Any:
        return self._actors[slot].score.remote(plan)

    def score_many(self, plans: Sequence[Any]) -> list[Scored]:
        """Score every plan, one per idle worker; results in the plans' order. Dead workers' plans go to others."""
        self.start()
        ray, exc_types = self.ray, _lost(self.ray)
        results: list[Scored | None] = [None] * len(plans)
        queue, tries = deque(range(len(plans))), [0] * len(plans)
        inflight: dict[Any, tuple[int, int]] = {}
        while queue or inflight:
            while queue and self._idle:
                slot, i = self._idle.popleft(), queue.popleft()
                tries[i] += 1
                inflight[self._submit(slot, plans[i])] = (slot, i)
            waiting = [*inflight, *self._starting]
            if not waiting:
                raise AgmcError(f"every scoring worker died ({self.restarts} replaced); the search cannot go on")
            done, _ = ray.wait(waiting, num_returns=1)
            ref = done[0]
            if ref in self._starting:
                slot = self._starting.pop(ref)
                try:
                    self._joined(slot, ray.get(ref))
                except exc_types as exc:
                    self._replace(slot, exc)
                continue
            slot, i = inflight.pop(ref)
            try:
                reward, seconds = ray.get(ref)
            except exc_types as exc:
                self._replace(slot, exc)
                self._retry(i, tries, queue, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                if not _out_of_memory(exc):
                    raise exc.as_instanceof_cause() from None
                self._idle.append(slot)  # alive: only this candidate did not fit
                self._retry(i, tries, queue, exc)
                continue
            st = self.stats[slot]
            st.candidates += 1
            st.seconds += seconds
            results[i] = Scored(reward, slot, seconds)
            self._idle.append(slot)
        return [r for r in results if r is not None]

    def _retry(self, i: int, tries: list[int], queue: deque[int], exc: BaseException) -> None:
        if tries[i] >= MAX_TRIES:
            raise AgmcError(f"a candidate failed on {tries[i]} scoring workers: {_cause(exc)}")
        queue.appendleft(i)

    def _replace(self, slot: int, exc: BaseException) -> None:
        """A worker died: start another in its slot (it joins when its scorer is built), while restarts remain."""
        try:
            self.ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self.restarts >= self.max_restarts:
            return
        self.restarts += 1
        self.stats[slot].restarts += 1
        self._actors[slot] = self._spawn()
        self._starting[self._actors[slot].describe.remote()] = slot


def _lost(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's exceptions for a worker that is gone (killed, crashed, out of memory)."""
    names = ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "ActorUnavailableError", "NodeDiedError")
    return tuple(t for t in (getattr(ray.exceptions, n, None) for n in names) if isinstance(t, type))


def _out_of_memory(exc: Any) -> bool:
    """A scorer raised torch's (CUDA) out-of-memory error: another worker may have room."""
    cause = getattr(exc, "cause", None)
    return isinstance(cause, MemoryError) or type(cause).__name__ == "OutOfMemoryError"


def _cause(exc: BaseException) -> str:
    """The first line of an error (Ray's wrap the worker's traceback)."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
