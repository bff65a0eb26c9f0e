"""Pruning without labels, measured (issue 16): which fidelity form tracks accuracy, how noisy each reward is,
accuracy- vs fidelity-rewarded agmc searches after equal recovery, and seconds per episode.

    python benchmarks/label_free.py forms  --model fixtures/models/resnet20.onnx --episodes 100 [--dense-outputs] \
        --tag _search --out OUT
    python benchmarks/label_free.py noise  --model fixtures/models/resnet20.onnx --plans 8 --subsets 5 --out OUT \
        [--vary both|calib|reward --tag _calib]
    python benchmarks/label_free.py speed  --model fixtures/models/resnet20.onnx --plans 20 --out OUT
    python benchmarks/label_free.py search --model fixtures/models/resnet20.onnx --episodes 100 --seeds 0 1 \
        --epochs 2 --out OUT
    python benchmarks/label_free.py recipe --model fixtures/models/resnet56.onnx --episodes 100 --seeds 0 \
        --epochs 2 [--variants '{"T1": {"temperature": 1}}'] --out OUT

Each writes OUT/<what>_<model><tag>.json (benchmarks/label_free/ holds the committed ones; label_free.md the
tables). `forms`: the plans an accuracy-rewarded agmc search of --episodes visits (or --plans random plans at
--target MACs, per-group ratios jittered), BN re-calibrated, each scored on the reward split by every
candidate form (logits: top-1 agreement, exp(-KL), their blend; any output as dense: 1 - NMSE, 1 - NMSE/2,
exp(-NMSE), concordance, cosine) and by accuracy; the Spearman correlation of each with TEST accuracy, over
all plans and over the better half. --dense-outputs adds a feature map and an embedding as outputs
(fixtures/multi_output.py).
`noise`: the same plan scored on --subsets disjoint reward/calibration subsets of TRAIN: std per plan, for the
accuracy and the fidelity rewards. `search`: agmc rewarded by accuracy and by fidelity (same episodes and
seed), then the same recovery for both (--epochs of label-free distillation, and of labelled fine-tuning),
TEST accuracy before and after, seconds per episode. `speed`: seconds per scored candidate with either reward,
the same plans scored alternately. `recipe`: one fidelity-rewarded agmc plan per seed,
recovered by each distillation recipe (temperature, colour jitter; labelled fine-tuning beside them). Data: the shipped Fashion-MNIST subset. One scoring
thread (the machine's 2 cores are shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agmc_onnx.api import analyze  # noqa: E402
from agmc_onnx.data import load_dataset, reward_split  # noqa: E402
from agmc_onnx.data.preprocess import Preprocess  # noqa: E402
from agmc_onnx.evaluate import Evaluator  # noqa: E402
from agmc_onnx.fidelity import combine, terms_of  # noqa: E402
from agmc_onnx.plan import Plan, round_count  # noqa: E402
from agmc_onnx.strategies import Budget, StrategyContext  # noqa: E402
from agmc_onnx.strategies.base import MacsSolver  # noqa: E402

DATA = ROOT / "fixtures" / "data"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def random_plans(analysis: Any, target: float, n: int, seed: int, spread: float = 0.5) -> list[Plan]:
    """`n` plans at `target` MACs: per-group ratios jittered log-normally around one ratio, solved to the target."""
    rng = np.random.default_rng(seed)
    ctx = StrategyContext(analysis=analysis, budget=Budget(flops=target), round_to=1, path="model")
    plans = []
    for _ in range(n):
        solver = MacsSolver(ctx)
        sizes = {g.id: g.size for g in solver.groups}
        jitter = {gid: float(np.exp(spread * rng.standard_normal())) for gid in sizes}

        def family(t: float, jitter: dict[int, float] = jitter, sizes: dict[int, int] = sizes) -> dict[int, int]:
            return {gid: round_count(min(1.0, t * jitter[gid]) * s, s, 1) for gid, s in sizes.items()}

        plans.append(solver.solve(family))
    return plans


def outputs(module: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> list[torch.Tensor]:
    """Every output of the module on x, in batches."""
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            o = module(x[i:i + batch])
            parts.append(list(o) if isinstance(o, (tuple, list)) else [o])
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def dense_forms(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Candidate forms for a dense output: 1 - NMSE (per channel), 1 - NMSE/2, exp(-NMSE), concordance,
    per-example cosine."""
    a, b = out.double().reshape(len(out), out.shape[1], -1), ref.double().reshape(len(ref), ref.shape[1], -1)
    var = b.transpose(0, 1).reshape(b.shape[1], -1).var(1, unbiased=False).clamp_min(1e-12)
    nmse = float((((a - b) ** 2).mean((0, 2)) / var).mean())
    ma, mb = a.mean((0, 2)), b.mean((0, 2))
    va, vb = a.transpose(0, 1).reshape(a.shape[1], -1).var(1, unbiased=False), var
    cov = ((a - ma[None, :, None]) * (b - mb[None, :, None])).mean((0, 2))
    ccc = float((2 * cov / (va + vb + (ma - mb) ** 2).clamp_min(1e-12)).clamp_min(0).mean())  # Lin's concordance
    cos = float(torch.nn.functional.cosine_similarity(a.reshape(len(a), -1), b.reshape(len(b), -1), dim=1).mean())
    return {"nmse": max(0.0, 1 - nmse), "half_nmse": max(0.0, 1 - nmse / 2), "exp_nmse": float(np.exp(-nmse)),
            "ccc": ccc, "cosine": cos}  # fmt: skip


def form_scores(outs: list[torch.Tensor], refs: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    """Every candidate form of the reward for each output vs the original's (logits: also treated as dense)."""
    row: dict[str, float] = {}
    for name, out, ref in zip(names, outs, refs, strict=True):
        if ref.dim() == 2:
            t = {k: v.double().mean(0) for k, v in terms_of("logits", out, ref).items()}
            row.update({f"{name}:agree": float(t["agree"]), f"{name}:exp_kl": float(torch.exp(-t["kl"])),
                        f"{name}:blend": combine("logits", t)})  # fmt: skip
        row.update({f"{name}:dense_{k}": v for k, v in dense_forms(out, ref).items()})
    return row


def load(model: str, reward_images: int, seed: int) -> tuple[Any, Any, Any, Any]:
    """Analysis, reward split, calibration rest and test split of the shipped data for `model`."""
    a = analyze(model)
    pre = Preprocess.for_model(a.model)
    train, test = load_dataset(DATA, "train", pre), load_dataset(DATA, "test", pre)
    split = reward_split(train, reward_images, seed)
    return a, split.reward, split.rest, test


class Recorder:
    """An evaluator for the search that scores by accuracy and records every form and the TEST accuracy of each
    plan it scores (the plans a search visits are the regime a reward must rank well)."""

    def __init__(self, ev: Evaluator, refs: list[torch.Tensor], names: list[str], x_r: torch.Tensor, y_r: np.ndarray,
                 x_t: torch.Tensor, y_t: np.ndarray) -> None:  # fmt: skip
        self.ev, self.refs, self.names, self.x_r, self.y_r, self.x_t, self.y_t = ev, refs, names, x_r, y_r, x_t, y_t
        self.bn_recalibrated = ev.bn_recalibrated
        self.rows: list[dict[str, float]] = []

    def score(self, plan: Plan) -> float:
        """Accuracy on the reward split; every form and the test accuracy recorded."""
        t0 = time.perf_counter()
        module = self.ev._model_for(plan)
        self.ev._recalibrate(module)
        outs = outputs(module, self.x_r)
        row = form_scores(outs, self.refs, self.names)
        row["accuracy"] = float((outs[0].argmax(1).numpy() == self.y_r).mean())
        row["test_accuracy"] = float((outputs(module, self.x_t)[0].argmax(1).numpy() == self.y_t).mean())
        row["seconds"] = time.perf_counter() - t0
        self.rows.append(row)
        print(json.dumps({"plan": len(self.rows) - 1, **{k: round(v, 4) for k, v in row.items()}}), flush=True)
        return row["accuracy"]


def cmd_forms(args: argparse.Namespace) -> dict[str, Any]:
    """Forms vs TEST accuracy over random plans, or over the plans an accuracy-rewarded agmc search visits."""
    from converters import to_torch

    torch.set_num_threads(1)
    model = args.model
    if args.dense_outputs:
        from fixtures.multi_output import with_dense_outputs

        model = str(with_dense_outputs(args.model, args.out / "resnet20_dense.onnx"))
    a, reward, rest, test = load(model, args.reward_images, 0)
    ev = Evaluator(a, reward, rest, calib_images=256, device="cpu", threads=1)
    original = to_torch(a.model.proto, trainable=False).eval()
    x_r, x_t = torch.as_tensor(reward.x), torch.as_tensor(test.x)
    names = [o.name for o in a.model.proto.graph.output]
    rec = Recorder(ev, outputs(original, x_r), names, x_r, reward.y, x_t, test.y)
    if args.episodes:
        from agmc_onnx.rl.runner import run_search

        ctx = StrategyContext(analysis=a, budget=Budget(flops=args.target), round_to="auto", evaluator=rec,
                              seed=args.seed, options={"episodes": args.episodes}, path=args.model)  # fmt: skip
        run_search(ctx, "agmc")
    else:
        for plan in random_plans(a, args.target, args.plans, args.seed, args.spread):
            rec.score(plan)
    rows = rec.rows
    keys = [k for k in rows[0] if k not in ("test_accuracy", "seconds")]
    test_acc = np.array([r["test_accuracy"] for r in rows])
    good = test_acc >= np.median(test_acc)

    def stats(k: str) -> dict[str, float]:
        v = np.array([r[k] for r in rows])
        return {"spearman_vs_test": spearman(v, test_acc), "spearman_vs_test_top_half": spearman(v[good], test_acc[good]),
                "min": float(v.min()), "max": float(v.max())}  # fmt: skip

    return {"kind": "forms", "model": model, "target": args.target, "plans": len(rows),
            "source": f"agmc search, {args.episodes} episodes, seed {args.seed}" if args.episodes else
            f"random plans, spread {args.spread}, seed {args.seed}", "reward_images": args.reward_images,
            "rows": rows, "summary": {k: stats(k) for k in keys}}  # fmt: skip


def cmd_noise(args: argparse.Namespace) -> dict[str, Any]:
    """Std of each reward per plan over disjoint reward/calibration subsets of TRAIN (same plan, other images;
    --vary calib / reward keeps the other one fixed)."""
    from agmc_onnx.strategies import REGISTRY

    torch.set_num_threads(1)
    a = analyze(args.model)
    pre = Preprocess.for_model(a.model)
    train = load_dataset(DATA, "train", pre)
    order = np.random.default_rng(args.seed).permutation(len(train))
    r, c = args.reward_images, 256
    if args.subsets * (r + c) > len(train):
        raise SystemExit(f"{args.subsets} subsets of {r} + {c} images do not fit in {len(train)}")
    ctx = StrategyContext(analysis=a, budget=Budget(flops=args.target), round_to="auto", path=args.model)
    plans = {"uniform": REGISTRY["uniform"]().propose(ctx), "l1-global": REGISTRY["l1-global"]().propose(ctx)}
    plans.update({f"random{i}": p for i, p in enumerate(random_plans(a, args.target, args.plans - 2, args.seed, 0.25))})
    scores: dict[str, dict[str, list[float]]] = {name: {"accuracy": [], "fidelity": []} for name in plans}
    for s in range(args.subsets):
        lo = s * (r + c)
        reward, calib = train.subset(order[lo:lo + r]), train.subset(order[lo + r:lo + r + c])
        if args.vary == "calib":  # one reward split, other calibration images
            reward = train.subset(order[:r])
        elif args.vary == "reward":  # other reward splits, one set of calibration images
            calib = train.subset(order[r:r + c])
        ev = Evaluator(a, reward, calib, calib_images=c, device="cpu", threads=1, reward_kind="fidelity")
        for name, plan in plans.items():
            module = ev._model_for(plan)
            ev._recalibrate(module)
            scores[name]["accuracy"].append(ev.accuracy(module))
            scores[name]["fidelity"].append(ev.fidelity_of(module))
        print(json.dumps({"subset": s, **{n: {k: round(v[-1], 4) for k, v in d.items()}
                                          for n, d in scores.items()}}), flush=True)  # fmt: skip
    summary = {}
    for kind in ("accuracy", "fidelity"):
        per_plan = np.array([scores[n][kind] for n in plans])  # [plans, subsets]
        within = float(per_plan.std(1, ddof=1).mean())
        between = float(per_plan.mean(1).std(ddof=1))
        summary[kind] = {"mean_std_per_plan": within, "std_between_plans": between, "noise_to_signal": within / between}
    return {"kind": "noise", "vary": args.vary, "model": args.model, "target": args.target, "reward_images": r,
            "calib_images": c,
            "subsets": args.subsets, "plans": list(plans), "scores": scores, "summary": summary}  # fmt: skip


def recover(proto: Any, ctx: Any, epochs: int, labels: bool, seed: int, teacher: bool | None = None,
            **recipe: float) -> float:  # fmt: skip
    """TEST accuracy after `epochs` of fine-tuning: labelled cross-entropy (with distillation when `teacher`), or
    distillation without labels; `recipe` overrides FinetuneConfig's defaults (temperature, color)."""
    from agmc_onnx.evaluate import evaluate_onnx
    from agmc_onnx.finetune import FinetuneConfig, finetune

    train, held = ctx.finetune_data()
    if not labels:
        train, held = train.without_labels(), held.without_labels()
    teach = not labels if teacher is None else teacher
    cfg = FinetuneConfig(epochs=epochs, seed=seed, **recipe)
    res = finetune(proto, train, held, cfg, teacher=str(ctx.path) if teach else None, test=ctx.test, progress=False)
    return evaluate_onnx(res.proto, ctx.test)


RECIPES = {  # name: recover() keywords; "T4 + colour" was the default before this benchmark
    "distilled T4 + colour 0.1": {"temperature": 4.0, "color": 0.1},
    "distilled T4": {"temperature": 4.0},
    "distilled T2": {"temperature": 2.0},
    "distilled T1": {"temperature": 1.0},
    "distilled T1 + 3 feature maps": {"temperature": 1.0, "feature_points": 3},
    "labelled": {"labels": True},
}


def cmd_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """One fidelity-rewarded agmc plan per seed, recovered by each recipe for --epochs: TEST accuracy."""
    from agmc_onnx.evaluate import evaluate_onnx
    from agmc_onnx.finetune import FinetuneConfig
    from agmc_onnx.workflows.context import build_context
    from agmc_onnx.workflows.search import search_prune

    variants = json.loads(args.variants) if args.variants else RECIPES
    rows = []
    for seed in args.seeds:
        ctx = build_context(args.model, DATA, seed=seed)
        res = search_prune(args.model, args.target, "agmc", data=ctx, episodes=args.episodes, seed=seed,
                           reward="fidelity", threads=1, device="cpu")  # fmt: skip
        pruned = evaluate_onnx(res.prune.proto, ctx.test)
        for name, kw in variants.items():
            t0 = time.perf_counter()
            kw = dict(kw)
            labels = bool(kw.pop("labels", False))
            acc = recover(res.prune.proto, ctx, args.epochs, labels, seed, **kw)
            row = {"seed": seed, "recipe": name, "settings": kw, "labels": labels, "test_pruned": pruned,
                   f"test_after_{args.epochs}ep": acc, "seconds": time.perf_counter() - t0}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    defaults = FinetuneConfig()
    return {"kind": "recipe", "model": args.model, "target": args.target, "episodes": args.episodes,
            "seeds": args.seeds, "epochs": args.epochs, "rows": rows,
            "defaults": {"temperature": defaults.temperature, "color": defaults.color}}  # fmt: skip


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    """agmc rewarded by accuracy vs fidelity: same episodes, seed and reward split; then the same recovery."""
    from agmc_onnx.evaluate import evaluate_onnx
    from agmc_onnx.workflows.context import build_context
    from agmc_onnx.workflows.search import search_prune

    rows = []
    for seed in args.seeds:
        ctx = build_context(args.model, DATA, seed=seed)
        for reward in ("accuracy", "fidelity"):
            t0 = time.perf_counter()
            res = search_prune(args.model, args.target, "agmc", data=ctx, episodes=args.episodes, seed=seed,
                               reward=reward, threads=1, device="cpu")  # fmt: skip
            search = res.report["search"]
            row = {"seed": seed, "reward": reward, "episodes": args.episodes, "search_seconds": time.perf_counter() - t0,
                   "seconds_per_episode": search["seconds_per_episode"],
                   "scoring_seconds_per_candidate": search["scoring_seconds"] / max(1, search["scored_candidates"]),
                   "best_reward": search["best_reward"], "macs_ratio": res.report["macs_ratio"],
                   "test_pruned": evaluate_onnx(res.prune.proto, ctx.test),
                   "test_fidelity_pruned": res.report["fidelity"]["test"]["pruned"]}  # fmt: skip
            for labels in (False, True):
                if args.epochs:
                    key = f"test_after_{args.epochs}ep_{'labelled' if labels else 'distilled'}"
                    row[key] = recover(res.prune.proto, ctx, args.epochs, labels, seed)
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    from agmc_onnx.finetune import FinetuneConfig

    defaults = FinetuneConfig()
    recipe = {"temperature": defaults.temperature, "color": defaults.color}
    return {"kind": "search", "model": args.model, "target": args.target, "episodes": args.episodes,
            "seeds": args.seeds, "epochs": args.epochs, "rows": rows, "recipe": recipe}  # fmt: skip


def cmd_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per scored candidate, accuracy vs fidelity reward: same plans, same data, scored alternately (so a
    busy machine slows both alike); the evaluator's build time (fidelity computes the original's outputs once)."""
    torch.set_num_threads(1)
    a, reward, rest, _ = load(args.model, args.reward_images, 0)
    built: dict[str, float] = {}
    evs: dict[str, Evaluator] = {}
    for kind in ("accuracy", "fidelity"):
        t0 = time.perf_counter()
        evs[kind] = Evaluator(a, reward, rest, calib_images=256, device="cpu", threads=1, reward_kind=kind)
        built[kind] = time.perf_counter() - t0
    seconds: dict[str, list[float]] = {"accuracy": [], "fidelity": []}
    for i, plan in enumerate(random_plans(a, args.target, args.plans, args.seed, 0.25)):
        for kind in (("accuracy", "fidelity") if i % 2 == 0 else ("fidelity", "accuracy")):
            t0 = time.perf_counter()
            evs[kind].score(plan)
            seconds[kind].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in seconds.items()}
    return {"kind": "speed", "model": args.model, "reward_images": args.reward_images, "calib_images": 256,
            "plans": args.plans, "evaluator_mode": evs["fidelity"].mode, "build_seconds": built, "seconds": seconds,
            "summary": {"median_seconds": med, "fidelity_over_accuracy": med["fidelity"] / med["accuracy"]}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["forms", "noise", "search", "speed", "recipe"])
    p.add_argument("--model", default=str(ROOT / "fixtures" / "models" / "resnet20.onnx"))
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--plans", type=int, default=40)
    p.add_argument("--episodes", type=int, default=0, help="forms: the plans an agmc search of N episodes visits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="search: seeds")
    p.add_argument("--subsets", type=int, default=5, help="noise: disjoint reward/calibration subsets")
    p.add_argument("--vary", choices=["both", "calib", "reward"], default="both",
                   help="noise: what changes between subsets (reward split, BN calibration images, or both)")
    p.add_argument("--epochs", type=int, default=2, help="search: recovery epochs (0: none)")
    p.add_argument("--spread", type=float, default=0.5, help="forms: log-normal jitter of the per-group ratios")
    p.add_argument("--reward-images", type=int, default=1000)
    p.add_argument("--dense-outputs", action="store_true",
                   help="forms: the model with two feature maps as extra outputs (fixtures/multi_output.py)")
    p.add_argument("--out", type=Path, default=Path("/tmp/label_free"))
    p.add_argument("--tag", default="", help="suffix of the JSON file's name")
    p.add_argument("--variants", default="", help="recipe: JSON {name: {temperature, color, labels}} (default: "
                   "T4 + colour 0.1, T4, T2, T1, T1 + 3 feature maps, labelled)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    commands = {"forms": cmd_forms, "noise": cmd_noise, "search": cmd_search, "speed": cmd_speed, "recipe": cmd_recipe}
    result = commands[args.what](args)
    name = f"{args.what}_{Path(args.model).stem}{args.tag}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(json.dumps(result.get("summary", {}), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
