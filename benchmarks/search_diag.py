"""Search diagnostics: one run, per-episode reward and keep ratios, summary by phase (warm-up vs policy).

    python benchmarks/search_diag.py MODEL STRATEGY SEED EPISODES TAG ['{"noise_floor": 0, "elite_episodes": 0}']

Prints one JSON line (best, the episode it came from, mean/max reward in warm-up and after it, the
10-episode means, the mean std of the last 20 plans' keep ratios) and writes OUT/TAG.json with the
whole curve (OUT: $SEARCH_DIAG_OUT or /tmp). Options are DDPGConfig fields (AMC's agent: noise_floor 0,
elite_episodes 0, critic_warmup 0) and, for agmc, "standardize" (false: raw GNN group embeddings). Scoring as benchmarks/search.py on a CPU: 1000 reward images, BN re-calibrated, one thread (run one per core).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import benchmarks.search  # noqa: E402, F401  (torchvision stub)
from agmc_onnx.api import (  # noqa: E402
    analyze,  # noqa: E402
    load_search_data,
    search_defaults,
)
from agmc_onnx.evaluate import Evaluator  # noqa: E402
from agmc_onnx.rl.runner import run_search  # noqa: E402
from agmc_onnx.strategies import Budget, StrategyContext  # noqa: E402


def main(argv: list[str]) -> int:
    """Command line (positional)."""
    model, kind, seed, eps, tag = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    opts = json.loads(argv[5]) if len(argv) > 5 else {}
    d = search_defaults("cpu", eps, None, None)
    a = analyze(model)
    sd = load_search_data(a.model, str(ROOT / "fixtures" / "data"), d.reward_images, 0)
    ev = Evaluator(
        a, sd.reward, sd.calibration, bn_recalibrate=True, calib_images=d.calib_images, device="cpu", threads=1
    )
    ctx = StrategyContext(analysis=a, budget=Budget(flops=0.5), round_to=1, evaluator=ev, seed=seed,
                          options={"episodes": eps, **opts}, path=model)  # fmt: skip
    t0 = time.time()
    _, res = run_search(ctx, kind)
    r = np.array([e.reward for e in res.curve])
    ratios = np.array([e.ratios for e in res.curve])
    w = sum(1 for e in res.curve if e.kind == "random")
    tenth = np.convolve(r, np.ones(10) / 10, "valid") if len(r) >= 10 else np.zeros(0)
    out = {"tag": tag, "kind": kind, "seed": seed, "options": opts, "best": res.best_reward, "best_ep": res.best_episode,
           "wall": time.time() - t0, "warm_mean": float(r[:w].mean()) if w else None,
           "warm_max": float(r[:w].max()) if w else None,
           "policy_mean": float(r[w:].mean()) if w < len(r) else None,
           "policy_max": float(r[w:].max()) if w < len(r) else None,
           "policy_min_10ep_mean": float(tenth[w:].min()) if w < len(tenth) else None,
           "first_10ep_mean_0.6": next((i for i in range(w, len(tenth)) if tenth[i] >= 0.6), None),
           "last20_ratio_std": float(ratios[-20:].std(0).mean()),
           "by10": [round(float(r[i:i + 10].mean()), 3) for i in range(0, len(r), 10)]}  # fmt: skip
    print(json.dumps(out))
    path = Path(os.environ.get("SEARCH_DIAG_OUT", "/tmp")) / f"{tag}.json"
    path.write_text(json.dumps({**out, "rewards": r.tolist(), "ratios": ratios.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
