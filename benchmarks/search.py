"""Search benchmark: agmc vs amc vs random vs uniform vs l1-global at one MACs target, equal episode budgets.

Every plan is scored the same way: reward-split accuracy with and without BN re-calibration (the
search's own score), then the WRITTEN file (BN re-calibrated on the evaluator's images, as
`agmc-onnx prune` writes it) evaluated in ONNX Runtime on the reward split and the test split;
seconds per episode and episodes to reach 99% of the final best reward. Seeds are interleaved
(seed 0 of every strategy, then seed 1, ...) and `--time-budget` stops starting new runs when the
next one would not fit, so a time-boxed run keeps the comparison balanced. `--jobs N` runs N of
them at a time, each in its own process (with `--threads 1`: one core each). Writes into --out:
search.md, search.json (rows; per run the best-so-far curve and every episode's reward; re-written after
every finished run, with "partial": true until the end, so a run stopped for time keeps what it finished),
search.png (best reward per episode) — three files. `--render search.json` re-writes search.md and
search.png from a finished run (after a change to the report). Models named in
fixtures/architectures.py HELD_OUT (trained by fixtures/train.py with another recipe; issue 19) get their
own section with issue 19's targets on TEST accuracy; search defaults are judged on that section.

CPU (ResNet-20, ~13 min on 2 busy cores; results in benchmarks/search_resnet20_cpu/):
    python benchmarks/search.py --models fixtures/models/resnet20.onnx --episodes 150 --seeds 0 1 \
        --time-budget 1600 --out benchmarks/search_resnet20_cpu
GPU (ResNet-56, one H200, under 4.5 min wall: 2000 reward + 512 calibration images on the GPU, agent
on one CPU thread; measured there at 200 episodes: agmc 0.24 s/episode, amc 0.19, random 0.09, one
round of all five strategies 117 s wall; a run starts only if 1.2x its strategy's last run still fits):
    python benchmarks/search.py --models fixtures/models/resnet56.onnx --device cuda --episodes 300 \
        --seeds 0 1 --time-budget 225 --out OUT
Needs only torch, torch-geometric, onnx, onnxruntime (CPU is fine: it evaluates the written files),
numpy, networkx, click, rich, plus onnx2torch, onnxslim (+ colorama), onnx-graphsurgeon; torchvision
and matplotlib are optional (a stub stands in for onnx2torch's NMS/RoiAlign import; no PNG);
torch-pruning==1.6.1 only for the tp-global-l2 / tp-local-l2 baselines (torch_pruning_baseline.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _torchvision_stub() -> None:
    """onnx2torch imports torchvision only for its NMS / RoiAlign converters; a bare GPU host may lack it."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        import types

        def missing(*_: object, **__: object) -> None:
            raise ImportError("torchvision is not installed (onnx2torch needs it for NMS / RoiAlign only)")

        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = ops.box_convert = missing  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules.setdefault("torchvision", tv)
        sys.modules.setdefault("torchvision.ops", ops)


_torchvision_stub()

import torch  # noqa: E402
from search_report import (  # noqa: E402
    RULES,
    SEARCHES,
    TORCH_PRUNING,
    VARIANTS,
    described_command,
    markdown,
    merge_runs,
    plot,
    read_run,
    renamed,
)

from agmc_onnx.api import analyze, load_search_data, search_defaults  # noqa: E402
from agmc_onnx.bn import recalibrated_onnx  # noqa: E402
from agmc_onnx.evaluate import Evaluator, evaluate_onnx  # noqa: E402
from agmc_onnx.io import write_bytes  # noqa: E402
from agmc_onnx.plan import ImportanceCache, plan_from_counts  # noqa: E402
from agmc_onnx.rl.runner import run_search  # noqa: E402
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext  # noqa: E402
from agmc_onnx.surgery import prune  # noqa: E402


def is_search(strategy: str) -> bool:
    """A search (seeded, with episodes) rather than a one-shot rule."""
    return strategy in SEARCHES or strategy in VARIANTS


@dataclass
class ModelSetup:
    """What every run on one model shares: analysis, data, both evaluators (BN re-calibrated / raw)."""

    path: str
    defaults: Any
    analysis: Any
    data: Any
    evaluators: dict[bool, Evaluator]  # BN re-calibrated (True) and raw (False)
    ev: Evaluator  # the one the searches score with (--raw-search: the raw one)
    cache: ImportanceCache


def setup_model(path: str, args: argparse.Namespace) -> ModelSetup:
    """Analyse the model, load the data, build the evaluators (once per process and model)."""
    d = search_defaults(args.device, args.episodes, args.reward_images, args.calib_images)
    a = analyze(path)
    sd = load_search_data(a.model, args.data, d.reward_images, 0)
    evs = {bn: Evaluator(a, sd.reward, sd.calibration, bn_recalibrate=bn, calib_images=d.calib_images,
                         device=d.device, threads=args.threads) for bn in (True, False)}  # fmt: skip
    return ModelSetup(path, d, a, sd, evs, evs[not args.raw_search], ImportanceCache(a, "l1"))


def run_one(setup: ModelSetup, args: argparse.Namespace, strategy: str, seed: int) -> dict[str, Any]:
    """One strategy (one seed of a search) on one model: the row, the best-so-far and per-episode rewards."""
    a, d, sd, ev = setup.analysis, setup.defaults, setup.data, setup.ev
    searching = is_search(strategy)
    kind, extra = VARIANTS.get(strategy, (strategy, {}))
    warm = {"warmup": args.warmup} if args.warmup is not None else {}
    ctx = StrategyContext(analysis=a, budget=Budget(flops=args.target), round_to=args.round_to,
                          evaluator=ev, seed=seed, options={"episodes": d.episodes, **extra, **warm}, path=setup.path)  # fmt: skip
    t0 = time.perf_counter()
    curve: list[Any] = []
    if searching:
        plan, res = run_search(ctx, kind)
        curve = res.curve
    elif strategy in TORCH_PRUNING:
        from torch_pruning_baseline import torch_pruning_plan

        plan, _ = torch_pruning_plan(a, args.target, global_pruning=TORCH_PRUNING[strategy])
    else:
        plan = REGISTRY[strategy]().propose(ctx)
    seconds = time.perf_counter() - t0
    plan = plan_from_counts(a, plan.keep_counts(), setup.cache)
    written = recalibrated_onnx(prune(a, plan), ev.calib, ev.batch_size, d.device)
    best = max((e.reward for e in curve), default=None)
    row = {
        "model": Path(setup.path).name, "strategy": strategy, "seed": seed, "skipped": False,
        "episodes": len(curve) or None, "macs_ratio": a.cost.macs(plan.keep_counts()) / a.cost.total_macs,
        "reward_bn": setup.evaluators[True].score(plan), "reward_raw": setup.evaluators[False].score(plan),
        "written_reward": evaluate_onnx(written, sd.reward),
        "written_test": evaluate_onnx(written, sd.test) if sd.test is not None else None,
        "seconds": seconds, "s_per_episode": seconds / len(curve) if curve else None,
        "episodes_to_99pct": next((e.episode for e in curve if best and e.reward >= 0.99 * best), None),
    }  # fmt: skip
    return {"row": row, "best": [e.best for e in curve], "rewards": [e.reward for e in curve]}


_WORKER: dict[str, Any] = {}  # one worker process's ModelSetup and args (set by _init_worker)


def _init_worker(path: str, args: argparse.Namespace) -> None:
    """Process-pool initializer: build the model's setup once per worker."""
    _WORKER.update(setup=setup_model(path, args), args=args)


def _worker_run(strategy: str, seed: int) -> dict[str, Any]:
    """Process-pool task: one run with the worker's setup."""
    return run_one(_WORKER["setup"], _WORKER["args"], strategy, seed)


class _Inline:
    """An executor that runs each task at submission (--jobs 1: no processes, same code path)."""

    def __init__(self, setup: ModelSetup, args: argparse.Namespace) -> None:
        self.setup, self.args = setup, args

    def submit(self, _fn: Any, strategy: str, seed: int) -> Future:
        """Run the task now; a finished Future."""
        fut: Future = Future()
        fut.set_result(run_one(self.setup, self.args, strategy, seed))
        return fut

    def shutdown(self) -> None:
        """Nothing to release."""


def bench_model(path: str, args: argparse.Namespace, deadline: float,
                checkpoint: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All strategies x seeds on one model (seeds interleaved, `args.jobs` at a time); rows and facts.
    `checkpoint` gets the rows and facts so far after every finished run (a run stopped for time keeps them)."""
    setup = setup_model(path, args)
    sd, ev = setup.data, setup.ev
    facts = {"model": Path(path).name, "device": setup.defaults.device, "reward_images": len(sd.reward),
             "calib_images": len(ev.calib), "evaluator_mode": ev.mode, "threads": ev.threads, "jobs": args.jobs,
             "original_reward": evaluate_onnx(setup.analysis.model.proto, sd.reward),
             "original_test": evaluate_onnx(setup.analysis.model.proto, sd.test) if sd.test is not None else None,
             "curves": {}, "rewards": {}}  # fmt: skip
    runs = [(s, 0) for s in args.strategies if s in RULES or s in TORCH_PRUNING]
    runs += [(s, seed) for seed in args.seeds for s in args.strategies if is_search(s)]
    if args.jobs > 1:
        pool: Any = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(path, args))  # fmt: skip
    else:
        pool = _Inline(setup, args)
    per_run: dict[str, float] = {}  # strategy -> seconds of its last run (time-budget estimates)
    results: dict[int, dict[str, Any]] = {}
    in_flight: dict[Future, int] = {}
    queue = list(enumerate(runs))
    try:
        while queue or in_flight:
            while queue and len(in_flight) < args.jobs:
                i, (strategy, seed) = queue.pop(0)
                left = deadline - time.time()
                need = 1.2 * per_run.get(strategy, max(per_run.values(), default=0.0))
                if is_search(strategy) and per_run and left < need:
                    print(f"time budget: skipping {strategy} seed {seed} ({left:.0f} s left)", flush=True)
                    results[i] = {"row": {"model": facts["model"], "strategy": strategy, "seed": seed, "skipped": True}}
                    continue
                in_flight[pool.submit(_worker_run, strategy, seed)] = i
            if not in_flight:
                continue
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in done:
                i = in_flight.pop(fut)
                results[i] = fut.result()
                row = results[i]["row"]
                if row["episodes"]:
                    per_run[row["strategy"]] = row["seconds"]
                print(json.dumps(row), flush=True)
                if checkpoint is not None:
                    checkpoint(*_collect(results, facts))
    finally:
        pool.shutdown()
    return _collect(results, facts)


def _collect(results: dict[int, dict[str, Any]], facts: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows in run order and the facts with every finished run's curve, whichever run finished first."""
    for i in sorted(results):
        row = results[i]["row"]
        if row.get("episodes"):
            key = f"{row['strategy']}/{row['seed']}"
            facts["curves"][key], facts["rewards"][key] = results[i]["best"], results[i]["rewards"]
    return [results[i]["row"] for i in sorted(results)], facts


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", help="ONNX files (required unless --render)")
    p.add_argument("--data", default=str(ROOT / "fixtures" / "data"))
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--episodes", type=int, default=None, help="per search (default: 300 on a GPU, 100 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="random warm-up episodes (default: a third of --episodes, at most 66)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(SEARCHES + RULES + tuple(TORCH_PRUNING)),
                   help=f"of {', '.join(SEARCHES + RULES + tuple(TORCH_PRUNING) + tuple(VARIANTS))} "
                        "(the tp-* baselines need torch-pruning installed)")
    p.add_argument("--reward-images", type=int, default=None, help="default: 2000 on a GPU, 1000 on a CPU")
    p.add_argument("--calib-images", type=int, default=None, help="default: 512 on a GPU, 256 on a CPU")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (use with --threads 1)")
    p.add_argument("--raw-search", action="store_true", help="search with raw (not re-calibrated) rewards")
    p.add_argument("--time-budget", type=float, default=None, help="seconds: start no search run that would not fit")
    p.add_argument("--out", type=Path, default=None, help="directory for search.md, search.json, search.png")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only re-write search.md (and search.png) beside an earlier run's search.json")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="with --out: one report from several runs' search.json (other seeds or strategies of the "
                        "same models; their commands are listed); a .log of a stopped run adds the rows it printed")
    p.add_argument("--rename", nargs="+", default=[], metavar="OLD=NEW",
                   help="with --merge: rename strategies in every input, all at once (after a default changed)")
    args = p.parse_args(argv)
    names = dict(n.split("=", 1) for n in args.rename if "=" in n)
    if len(names) != len(args.rename) or (names and not args.merge):
        p.error("--rename takes OLD=NEW pairs, with --merge")
    if args.merge:
        if not args.out:
            p.error("--merge needs --out")
        merged = merge_runs([renamed(read_run(f), names) for f in args.merge])
        args.out.mkdir(parents=True, exist_ok=True)
        write_bytes(json.dumps(merged, indent=1).encode(), args.out / "search.json")
        args.render = args.out / "search.json"
    if args.render:
        saved = json.loads(args.render.read_text())
        command = described_command(saved)
        machine = saved.get("machine", "machine not recorded (a search.json older than the field)")
        text = markdown(saved["rows"], saved["models"], command, saved.get("wall", float("nan")), machine)
        (args.render.parent / "search.md").write_text(text)
        plot(saved["models"], args.render.parent / "search.png")
        print(text)
        return 0
    if not args.models:
        p.error("--models is required")
    t0 = time.perf_counter()
    deadline = time.time() + (args.time_budget if args.time_budget else float("inf"))
    command = "python benchmarks/search.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    machine = f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {gpu}"
    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []

    def save(all_rows: list[dict[str, Any]], all_models: list[dict[str, Any]], partial: bool = True) -> None:
        """search.json with every finished run so far, replaced atomically ("partial": true until the end)."""
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            saved = {"command": command, "machine": machine, "wall": time.perf_counter() - t0, "rows": all_rows,
                     "models": all_models}  # fmt: skip
            write_bytes(json.dumps({**saved, "partial": True} if partial else saved, indent=1).encode(), args.out / "search.json")

    def checkpoint(r: list[dict[str, Any]], facts: dict[str, Any]) -> None:
        save(rows + r, models + [facts])

    for path in args.models:
        r, facts = bench_model(path, args, deadline, checkpoint=checkpoint)
        rows += r
        models.append(facts)
    text = markdown(rows, models, command, time.perf_counter() - t0, machine)
    print(text)
    if args.out:
        save(rows, models, partial=False)
        (args.out / "search.md").write_text(text)
        plot(models, args.out / "search.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
