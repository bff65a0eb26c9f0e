"""The search benchmark's report: search.md (held-out and tuning sections, issue 19's targets, per-model tables,
window means), search.png, and reading / merging earlier runs' search.json. No torch: renders anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SEARCHES = ("agmc", "amc", "random")
VARIANTS = {"agmc-lstm": ("agmc", {"decoder": "lstm"}), "agmc-ppo": ("agmc", {"agent": "ppo"}),
            "amc-ppo": ("amc", {"agent": "ppo"}),
            "agmc-stepwise": ("agmc", {"decoder": "stepwise"}), "agmc-hybrid": ("agmc", {"decoder": "hybrid"}),
            "agmc-frozen": ("agmc", {"lr_encoder": 0.0}),  # = agmc since issue 19 made the frozen GNN the default
            "agmc-trained": ("agmc", {"encoder": "trained"})}  # extra searches, only when named
RULES = ("uniform", "l1-global")
# Torch-Pruning's L2 plans (benchmark-only dependency: pip install torch-pruning==1.6.1), mapped onto our groups
TORCH_PRUNING = {"tp-global-l2": True, "tp-local-l2": False}


def held_out(model: str) -> bool:
    """A model no search setting was tuned on (fixtures/architectures.py HELD_OUT, by file stem)."""
    from fixtures.architectures import HELD_OUT

    return Path(model).stem in HELD_OUT


def markdown(rows: list[dict[str, Any]], models: list[dict[str, Any]], command: str, wall: float, machine: str) -> str:
    """Tuning models and held-out models in separate sections (defaults are judged on the held-out one);
    a table per model, means ± std over seeds."""
    lines = ["# Search benchmark", "", f"`{command}`", "", f"{machine}; wall {wall:.0f} s", ""]
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
    out += [paired_line(rows, names, "agmc", "amc", 1.0)]
    for variant in (v for v in VARIANTS if v in ran and VARIANTS[v][0] == "agmc"):
        gaps = [(mean(n, variant), mean(n, "amc")) for n in names]
        gaps = [v - o for v, o in gaps if v is not None and o is not None]
        if gaps:
            out.append(f"- variant {variant} vs amc: mean gap {float(np.mean(gaps)):+.2f} over {len(gaps)} model(s), "
                       f">= +1 on {sum(1 for g in gaps if g >= 1.0)} (a variant, not the default: for comparison)")
            out.append("  " + paired_line(rows, names, variant, "amc", 1.0))
            out.append("  " + paired_line(rows, names, "agmc", variant, 0.0))
    return out + [""]


def paired_line(rows: list[dict[str, Any]], names: list[str], a: str, b: str, margin: float) -> str:
    """`a` minus `b` paired by (model, seed) (the same seed shares the warm-up plans), with a percentile
    bootstrap 95% interval of the mean gap: whether the per-seed spread lets these runs tell the margin apart."""
    test = {(r["model"], r["strategy"], r["seed"]): 100 * r["written_test"] for r in rows
            if not r["skipped"] and r.get("written_test") is not None and r["model"] in names}  # fmt: skip
    gaps = np.array([v - test[(m, b, s)] for (m, k, s), v in test.items() if k == a and (m, b, s) in test])
    if len(gaps) < 2:
        return f"- {a} - {b} paired by seed: fewer than 2 pairs"
    means = np.random.default_rng(0).choice(gaps, (10_000, len(gaps))).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    where = "below" if hi < margin else "above" if lo > margin else "inside"
    return (f"- {a} - {b} paired by (model, seed) over {len(gaps)} pairs: mean {gaps.mean():+.2f}, std "
            f"{gaps.std(ddof=1):.2f}, 95% bootstrap interval [{lo:+.2f}, {hi:+.2f}] (+{margin:g} is {where} it); "
            f"{a} ahead in {int((gaps > 0).sum())}, behind in {int((gaps < 0).sum())}")


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


def described_command(run: dict[str, Any]) -> str:
    """A run's command, saying so when it stopped before its end (its search.json still "partial")."""
    return run["command"] + (" (stopped before its end: the runs it finished)" if run.get("partial") else "")


def renamed(run: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`run` with its strategies renamed at once (old -> new, e.g. agmc -> agmc-trained and agmc-frozen -> agmc
    when a default changes); rows, curves and rewards alike. The command says so."""
    if not names:
        return run

    def key(k: str) -> str:
        strategy, _, seed = k.partition("/")
        return f"{names.get(strategy, strategy)}/{seed}"

    said = ", ".join(f"{a} -> {b}" for a, b in names.items())
    return {**run, "command": f"{run['command']} (strategies renamed: {said})",
            "rows": [{**r, "strategy": names.get(r["strategy"], r["strategy"])} for r in run["rows"]],
            "models": [{**m, **{part: {key(k): v for k, v in m.get(part, {}).items()} for part in ("curves", "rewards")}}
                       for m in run["models"]]}  # fmt: skip


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
    machines = dict.fromkeys(r.get("machine", "machine not recorded") for r in runs)
    return {"command": " ; ".join(described_command(r) for r in runs),
            "machine": " / ".join(machines), "wall": sum(r.get("wall", 0.0) for r in runs),
            "rows": rows, "models": list(models.values())}  # fmt: skip
