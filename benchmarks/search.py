"""Search benchmark: agmc vs amc vs random vs uniform vs l1-global at one MACs target, equal episode budgets.

Every plan is scored the same way: reward-split accuracy with and without BN re-calibration (the
search's own score), then the WRITTEN file (BN re-calibrated on the evaluator's images, as
`agmc-onnx prune` writes it) evaluated in ONNX Runtime on the reward split and the test split;
seconds per episode and episodes to reach 99% of the final best reward. Seeds are interleaved
(seed 0 of every strategy, then seed 1, ...) and `--time-budget` stops starting new runs when the
next one would not fit, so a time-boxed run keeps the comparison balanced. `--jobs N` runs N of
them at a time, each in its own process (with `--threads 1`: one core each). Writes into --out:
search.md, search.json (rows; per run the best-so-far curve and every episode's reward),
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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

from agmc_onnx.api import analyze, load_search_data, search_defaults  # noqa: E402
from agmc_onnx.bn import recalibrated_onnx  # noqa: E402
from agmc_onnx.evaluate import Evaluator, evaluate_onnx  # noqa: E402
from agmc_onnx.plan import ImportanceCache, plan_from_counts  # noqa: E402
from agmc_onnx.rl.runner import run_search  # noqa: E402
from agmc_onnx.strategies import REGISTRY, Budget, StrategyContext  # noqa: E402
from agmc_onnx.surgery import prune  # noqa: E402

SEARCHES = ("agmc", "amc", "random")
VARIANTS = {"agmc-lstm": ("agmc", {"decoder": "lstm"}), "agmc-ppo": ("agmc", {"agent": "ppo"}),
            "amc-ppo": ("amc", {"agent": "ppo"}),
            "agmc-stepwise": ("agmc", {"decoder": "stepwise"}), "agmc-hybrid": ("agmc", {"decoder": "hybrid"}),
            "agmc-frozen": ("agmc", {"lr_encoder": 0.0})}  # extra searches, only when named
RULES = ("uniform", "l1-global")
# Torch-Pruning's L2 plans (benchmark-only dependency: pip install torch-pruning==1.6.1), mapped onto our groups
TORCH_PRUNING = {"tp-global-l2": True, "tp-local-l2": False}


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


def bench_model(path: str, args: argparse.Namespace, deadline: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All strategies x seeds on one model (seeds interleaved, `args.jobs` at a time); rows and facts."""
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
    finally:
        pool.shutdown()
    for i in sorted(results):  # curves in run order, whichever run finished first
        row = results[i]["row"]
        if row.get("episodes"):
            key = f"{row['strategy']}/{row['seed']}"
            facts["curves"][key], facts["rewards"][key] = results[i]["best"], results[i]["rewards"]
    return [results[i]["row"] for i in sorted(results)], facts


def held_out(model: str) -> bool:
    """A model no search setting was tuned on (fixtures/architectures.py HELD_OUT, by file stem)."""
    from fixtures.architectures import HELD_OUT

    return Path(model).stem in HELD_OUT


def markdown(rows: list[dict[str, Any]], models: list[dict[str, Any]], command: str, wall: float) -> str:
    """Tuning models and held-out models in separate sections (defaults are judged on the held-out one);
    a table per model, means ± std over seeds."""
    lines = ["# Search benchmark", "", f"`{command}`", "",
             f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; wall {wall:.0f} s", ""]  # fmt: skip
    held = [m for m in models if held_out(m["model"])]
    tuning = [m for m in models if not held_out(m["model"])]
    if held:
        lines += ["## Held-out models (no search setting was tuned on them; defaults are judged here)", ""]
        lines += held_out_targets(rows, held)
        lines += model_tables(rows, held)
    if tuning:
        lines += ["## Tuning models (the search's settings were chosen on these)", ""] if held else []
        lines += model_tables(rows, tuning)
    lines.append("Accuracies in percent; MACs as a fraction of the original. No fine-tuning.")
    return "\n".join(lines) + "\n"


def held_out_targets(rows: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[str]:
    """Issue 19's targets on the held-out models: TEST accuracy of the written file (BN re-calibrated, no
    fine-tuning), agmc vs amc (+1.0 on average and in at least 2 of 3 models), vs the best of as many random
    plans (+2) and vs Torch-Pruning's global L2 (+3)."""

    def mean(model: str, strategy: str) -> float | None:
        v = [r["written_test"] for r in rows if r["model"] == model and r["strategy"] == strategy
             and not r["skipped"] and r.get("written_test") is not None]  # fmt: skip
        return 100 * float(np.mean(v)) if v else None

    names = [m["model"] for m in models]
    ran = {r["strategy"] for r in rows}
    others = ("amc", "random", "tp-global-l2", "uniform", "l1-global") + tuple(v for v in VARIANTS if v in ran)
    out = ["Test accuracy of the written file, mean over seeds (agmc minus each in brackets):", "",
           "| model | agmc | " + " | ".join(others) + " |", "|---|---|" + "---|" * len(others)]  # fmt: skip
    for name in names:
        a = mean(name, "agmc")
        cells = []
        for o in others:
            v = mean(name, o)
            cells.append("-" if v is None else f"{v:.2f}" + (f" ({a - v:+.2f})" if a is not None else ""))
        out.append(f"| {name} | {'-' if a is None else f'{a:.2f}'} | " + " | ".join(cells) + " |")
    out.append("")
    for other, margin in (("amc", 1.0), ("random", 2.0), ("tp-global-l2", 3.0)):
        gaps = [(n, mean(n, "agmc"), mean(n, other)) for n in names]
        gaps = [(n, a - o) for n, a, o in gaps if a is not None and o is not None]
        if not gaps:
            continue
        avg = float(np.mean([g for _, g in gaps]))
        wins = sum(1 for _, g in gaps if g >= margin)
        need = min(2, len(gaps)) if other == "amc" else len(gaps)
        ok = avg >= margin and wins >= need
        out.append(f"- agmc >= {other} + {margin:g} test points: mean gap {avg:+.2f} over {len(gaps)} model(s), "
                   f"met on {wins}: **{'met' if ok else 'NOT met'}**")
    for variant in (v for v in VARIANTS if v in ran and VARIANTS[v][0] == "agmc"):
        gaps = [(mean(n, variant), mean(n, "amc")) for n in names]
        gaps = [v - o for v, o in gaps if v is not None and o is not None]
        if gaps:
            out.append(f"- variant {variant} vs amc: mean gap {float(np.mean(gaps)):+.2f} over {len(gaps)} model(s), "
                       f">= +1 on {sum(1 for g in gaps if g >= 1.0)} (a variant, not the default: for comparison)")
    return out + [""]


def model_tables(rows: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[str]:
    """A table per model: every strategy's means ± std over seeds, issue 4's targets, window means."""
    lines: list[str] = []
    for m in models:
        name = m["model"]
        orig_test = f"{100 * m['original_test']:.2f}%" if m["original_test"] is not None else "-"
        lines += [f"### {name}", "",
                  f"device {m['device']}, scoring mode {m['evaluator_mode']}, threads {m['threads']}; reward split "
                  f"{m['reward_images']} train images, BN calibration {m['calib_images']} other train images. "
                  f"Original: reward split {100 * m['original_reward']:.2f}%, test {orig_test}.", "",
                  "| strategy | runs | episodes | MACs | reward (BN recal) | reward (raw BN) | written file: reward | "
                  "written file: test | s/episode | episodes to 99% of best |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for strategy in dict.fromkeys(r["strategy"] for r in rows if r["model"] == name):
            rs = [r for r in rows if r["model"] == name and r["strategy"] == strategy and not r["skipped"]]
            skipped = sum(1 for r in rows if r["model"] == name and r["strategy"] == strategy and r["skipped"])

            def m_(k: str, pct: bool = True, rs: list[dict[str, Any]] = rs) -> str:
                v = [r[k] for r in rs if r.get(k) is not None]
                if not v:
                    return "-"
                f = 100.0 if pct else 1.0
                return f"{f * np.mean(v):.2f} ± {f * np.std(v):.2f}" if len(v) > 1 else f"{f * v[0]:.2f}"

            runs = f"{len(rs)}" + (f" ({skipped} skipped: time)" if skipped else "")
            lines.append(f"| {strategy} | {runs} | {m_('episodes', False)} | {m_('macs_ratio', False)} | "
                         f"{m_('reward_bn')} | {m_('reward_raw')} | {m_('written_reward')} | {m_('written_test')} | "
                         f"{m_('s_per_episode', False)} | {m_('episodes_to_99pct', False)} |")  # fmt: skip
        lines.append("")
        lines += targets(rows, m)
        lines += window_means(m)
    return lines


def targets(rows: list[dict[str, Any]], m: dict[str, Any]) -> list[str]:
    """Issue 4's targets, met or not, from this run's own rows and curves (means over the seeds run)."""
    name = m["model"]

    def mean(strategy: str, key: str) -> float | None:
        v = [r[key] for r in rows if r["model"] == name and r["strategy"] == strategy and not r["skipped"] and r.get(key) is not None]
        return float(np.mean(v)) if v else None

    agmc = mean("agmc", "reward_bn")
    if agmc is None:
        return []
    out = ["Targets (reward split with BN re-calibration, mean over the seeds run; test split in brackets):", ""]
    for other, margin, label in (("amc", 2.0, "agmc >= amc + 2 points"), ("uniform", 4.0, "agmc >= uniform + 4 points"),
                                 ("random", 0.0, "agmc above the best of as many random plans"),
                                 ("tp-global-l2", 0.0, "agmc above Torch-Pruning's global L2 plan")):  # fmt: skip
        ref = mean(other, "reward_bn")
        if ref is None:
            continue
        t_a, t_r = mean("agmc", "written_test"), mean(other, "written_test")
        test = f" (test {100 * t_a:.2f} vs {100 * t_r:.2f})" if t_a is not None and t_r is not None else ""
        ok = 100 * agmc > 100 * ref + margin if other in ("random", "tp-global-l2") else 100 * agmc >= 100 * ref + margin
        out.append(f"- {label}: {100 * agmc:.2f} vs {100 * ref:.2f}{test}: **{'met' if ok else 'NOT met'}**")
    faster = []
    for key, amc_best in m["curves"].items():
        strategy, seed = key.split("/")
        if strategy != "amc" or f"agmc/{seed}" not in m["curves"]:
            continue
        final = amc_best[-1]
        amc_ep = next(i for i, b in enumerate(amc_best) if b >= final)
        agmc_ep = next((i for i, b in enumerate(m["curves"][f"agmc/{seed}"]) if b >= final), None)
        faster.append((seed, amc_ep, agmc_ep))
    if faster:
        ok = all(a is not None and a < e for _, e, a in faster)
        detail = ", ".join(f"seed {s}: amc {e}, agmc {'never' if a is None else a}" for s, e, a in faster)
        out.append(f"- agmc reaches amc's final best reward in fewer episodes ({detail}): **{'met' if ok else 'NOT met'}**")
    return out + [""]


def window_means(m: dict[str, Any], width: int = 50) -> list[str]:
    """Mean reward of the episodes in each `width`-episode window, per search strategy (mean over its
    seeds): how fast each policy improves, which best-so-far curves hide."""
    rewards = m.get("rewards") or {}
    if not rewards:
        return []
    longest = max(len(r) for r in rewards.values())
    starts = list(range(0, longest, width))
    out = [f"Mean reward of the episodes in each {width}-episode window (percent, mean over the seeds whose episodes "
           "were saved, how many in brackets):", "",
           "| strategy | " + " | ".join(f"{a}-{min(a + width, longest) - 1}" for a in starts) + " |",
           "|---|" + "---|" * len(starts)]  # fmt: skip
    for strategy in dict.fromkeys(k.split("/")[0] for k in rewards):
        runs = [np.asarray(r) for k, r in rewards.items() if k.split("/")[0] == strategy]
        cells = []
        for a in starts:
            parts = [r[a:a + width] for r in runs if len(r) > a]
            cells.append(f"{100 * np.mean([p.mean() for p in parts]):.1f}" if parts else "-")
        out.append(f"| {strategy} ({len(runs)}) | " + " | ".join(cells) + " |")
    return out + [""]


def plot(models: list[dict[str, Any]], out: Path) -> None:
    """Best reward so far per episode, one line per search run (skipped without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no search.png", flush=True)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    colors = {"agmc": "tab:red", "agmc-stepwise": "tab:green", "agmc-lstm": "tab:orange", "agmc-ppo": "tab:purple", "amc-ppo": "tab:cyan", "amc": "tab:blue", "random": "tab:gray"}
    for ax, m in zip(axes[0], models, strict=True):
        for key, best in m["curves"].items():
            strategy = key.split("/")[0]
            ax.plot(np.asarray(best) * 100, color=colors.get(strategy), alpha=0.8, label=key)
        ax.set_title(m["model"])
        ax.set_xlabel("episode")
        ax.set_ylabel("best reward-split accuracy (%)")
        if m["curves"]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def read_run(path: Path) -> dict[str, Any]:
    """A run's search.json, or the log of a run stopped before it wrote one: the rows it printed (one JSON line per
    finished run; no curves, so they add nothing to the window means or the "fewer episodes" line)."""
    if path.suffix != ".log":
        return json.loads(path.read_text())
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith('{"model"')]
    return {"command": f"(rows printed to {path.name} by a run stopped before it wrote search.json)", "rows": rows, "models": []}


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' search.json as one: rows concatenated (a repeated model/strategy/seed is refused), each
    model's curves and rewards united, the commands joined in order, walls summed."""
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str, int]] = set()
    for run in runs:
        for r in run["rows"]:
            key = (r["model"], r["strategy"], r["seed"])
            if key in seen:
                raise SystemExit(f"--merge: {key} is in two runs")
            seen.add(key)
            rows.append(r)
        for m in run["models"]:
            into = models.setdefault(m["model"], {**m, "curves": {}, "rewards": {}})
            into["curves"].update(m.get("curves", {}))
            into["rewards"].update(m.get("rewards", {}))
    missing = sorted({r["model"] for r in rows} - set(models))
    if missing:
        raise SystemExit(f"--merge: no search.json among the inputs describes {', '.join(missing)}")
    return {"command": " ; ".join(r["command"] for r in runs), "wall": sum(r.get("wall", 0.0) for r in runs),
            "rows": rows, "models": list(models.values())}  # fmt: skip


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
    args = p.parse_args(argv)
    if args.merge:
        if not args.out:
            p.error("--merge needs --out")
        merged = merge_runs([read_run(f) for f in args.merge])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "search.json").write_text(json.dumps(merged, indent=1))
        args.render = args.out / "search.json"
    if args.render:
        saved = json.loads(args.render.read_text())
        text = markdown(saved["rows"], saved["models"], saved["command"], saved.get("wall", float("nan")))
        (args.render.parent / "search.md").write_text(text)
        plot(saved["models"], args.render.parent / "search.png")
        print(text)
        return 0
    if not args.models:
        p.error("--models is required")
    t0 = time.perf_counter()
    deadline = time.time() + (args.time_budget if args.time_budget else float("inf"))
    rows, models = [], []
    for path in args.models:
        r, facts = bench_model(path, args, deadline)
        rows += r
        models.append(facts)
    command = "python benchmarks/search.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = markdown(rows, models, command, time.perf_counter() - t0)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "search.md").write_text(text)
        wall = time.perf_counter() - t0
        (args.out / "search.json").write_text(json.dumps({"command": command, "wall": wall, "rows": rows, "models": models}, indent=1))
        plot(models, args.out / "search.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
