"""Search outputs: the curve and best plan for the report JSON, and a PNG (keep ratio per group, rewards)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from agmc_onnx.io import write_bytes
from agmc_onnx.rl.search import SearchResult


def search_section(result: SearchResult, strategy: str, **facts: Any) -> dict[str, Any]:
    """The report's `search` entry: strategy, settings, curve, best plan, seconds and episodes per second.

    `workers` (a fact) is the scorers' account: how many, where, per-worker scoring time, restarts.
    """
    seconds = [e.seconds for e in result.curve]
    rewards = [e.reward for e in result.curve]
    final = max(rewards) if rewards else None
    reach = next((e.episode for e in result.curve if final is not None and e.reward >= 0.99 * final), None)
    return {
        "strategy": strategy,
        **facts,
        **result.to_json(),
        "seconds_per_episode": sum(seconds) / len(seconds) if seconds else None,
        "episodes_per_second": len(seconds) / sum(seconds) if seconds and sum(seconds) > 0 else None,
        "episodes_to_99pct_best": reach,
    }


def plot_search(result: SearchResult, path: str | Path, title: str = "", reward: str = "reward-split accuracy") -> Path:
    """PNG: keep ratio of every prunable group in the best plan, and reward / best reward per episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ratios = result.best_ratios()
    ax1.bar(range(len(ratios)), list(ratios.values()), color="tab:blue")
    ax1.set_xticks(range(len(ratios)), [str(g) for g in ratios], fontsize=7)
    ax1.set_xlabel("prunable group (topological order)")
    ax1.set_ylabel("keep ratio")
    ax1.set_ylim(0, 1.05)
    ax1.set_title("best plan")
    eps = [e.episode for e in result.curve]
    ax2.plot(eps, [e.reward for e in result.curve], ".", ms=3, label="reward", color="tab:gray")
    ax2.plot(eps, [e.best for e in result.curve], "-", label="best", color="tab:red")
    ax2.set_xlabel("episode")
    ax2.set_ylabel(reward)
    ax2.legend(loc="lower right")
    ax2.set_title("search")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()  # rendered in memory, written by the one writer (atomic, the umask's mode, staged in a run)
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes(buf.getvalue(), path)
