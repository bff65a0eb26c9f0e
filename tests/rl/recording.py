"""The one-at-a-time search as it was before batched episodes (commit 1ba57a9), recorded on a tiny fixture.

`python -m tests.rl.recording` rewrites `k1_recording.json` from the code checked out (it was made from
1ba57a9, before issue 18's changes); tests/rl/test_batched.py replays the same cases with today's code
(K=1, one worker) and compares every episode bit for bit. The agmc-ppo entry was re-recorded from the
one-at-a-time loop of the transformer branch (h-tfm2, before batching) when that branch merged: its encoder
reads 8 more node features, so the GNN starts from other weights; the other cases did not change. The agmc
cases name `encoder="trained"`: the GNN trained with the actor, the only behaviour before issue 19 made the
frozen GNN the default (the keyword did not exist when they were recorded).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "fixtures" / "data"
RECORDING = Path(__file__).with_name("k1_recording.json")
# name -> search_prune keywords; ddpg learns from minibatches of 8 so that a short search learns at all
CASES: dict[str, dict[str, Any]] = {
    "agmc-ddpg": {"strategy": "agmc", "encoder": "trained", "seed": 3, "episodes": 10, "warmup": 3,
                  "options": {"batch": 8, "critic_warmup": 10}},
    "amc-ddpg": {"strategy": "amc", "seed": 1, "episodes": 10, "warmup": 3, "options": {"batch": 8}},
    "agmc-ppo": {"strategy": "agmc", "encoder": "trained", "agent": "ppo", "seed": 2, "episodes": 10, "options": {"episodes_per_update": 3}},
    "random": {"strategy": "random", "seed": 4, "episodes": 8},
}  # fmt: skip


def fixture_net(out: Path) -> Path:
    """The engine's Flatten->Gemm net (1x28x28, BN kept), as tests/test_search.py uses it."""
    from fixtures.engine_nets import export_net

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return export_net("flatten_gemm", out, "bn")


def fixture_data(net: Path) -> Any:
    """200 reward images, 128 calibration images, 300 test images of the shipped data."""
    from agmc_onnx.api import analyze, load_search_data

    sd = load_search_data(analyze(net).model, DATA, reward_images=200)
    sd.calibration = sd.calibration.subset(np.arange(128))
    sd.test = sd.test.subset(np.arange(300))
    return sd


def run_case(net: Path, data: Any, out: Path, case: dict[str, Any], **extra: Any) -> Any:
    """One search of CASES on the fixture (round_to 1, CPU, one thread); returns search_prune's result."""
    from agmc_onnx.api import search_prune

    kw = {k: v for k, v in case.items() if k != "strategy"}
    kw["options"] = {**kw.get("options", {}), **extra.pop("options", {})}
    out.mkdir(parents=True, exist_ok=True)
    return search_prune(net, 0.5, case["strategy"], data=data, round_to=1, output=out / "out.onnx",
                        device="cpu", threads=1, **kw, **extra)  # fmt: skip


def summary(result: Any) -> dict[str, Any]:
    """What must not change: every episode (reward, MACs, ratios, best so far, kind) and the best plan."""
    return {
        "curve": [[e.episode, e.reward, e.macs_ratio, e.ratios, e.best, e.kind] for e in result.curve],
        "best_counts": {str(g): c for g, c in sorted(result.best_counts.items())},
        "best_reward": result.best_reward,
        "best_episode": result.best_episode,
    }


def record() -> dict[str, Any]:
    """Run every case and return their summaries."""
    with tempfile.TemporaryDirectory() as tmp:
        net = fixture_net(Path(tmp))
        data = fixture_data(net)
        return {name: summary(run_case(net, data, Path(tmp) / name, case).search) for name, case in CASES.items()}


if __name__ == "__main__":
    RECORDING.write_text(json.dumps(record(), indent=1) + "\n")
    print(f"wrote {RECORDING}", file=sys.stderr)
