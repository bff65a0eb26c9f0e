"""Which pruning axes of a transformer buy speed in ONNX Runtime on a CPU (issue 15): vit_b_32 and convnext_tiny
(torchvision, random weights, exported at opset 17) pruned along attention heads only, MLP widths only, or
several axes together, each at the same MACs target, timed against the original, interleaved
(agmc_onnx.bench: every model in 3 ORT sessions, the fastest reported), at batch 1 and 8:

    python benchmarks/transformer_latency.py --out benchmarks/transformer_latency

A variant keeps one ratio for every group of the named kinds (heads: groups of attention heads; mlp: the other
prunable groups read by no LayerNorm, the MLP hidden widths; stream: the groups LayerNorms normalise, the
residual stream), rounded by the default `auto` rounding, bisected to the target (channels by L1). Heads alone
cannot remove half of a ViT's MACs (q, k, v, out are a third of a block), so ViT is measured at two targets:
0.7 (heads vs MLP vs both) and 0.5. Writes OUT.md and OUT.json with the commands, plans and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agmc_onnx.analysis import Analysis, analyze  # noqa: E402
from agmc_onnx.bench import bench  # noqa: E402
from agmc_onnx.cost import count_macs  # noqa: E402
from agmc_onnx.model import load  # noqa: E402
from agmc_onnx.plan import ImportanceCache, parse_round_to, plan_from_counts, round_count  # noqa: E402
from agmc_onnx.surgery import prune  # noqa: E402
from fixtures.transformers import export_fixture  # noqa: E402

VARIANTS = {
    "vit_b_32": [(0.7, ("heads",)), (0.7, ("mlp",)), (0.7, ("heads", "mlp")),
                 (0.5, ("mlp",)), (0.5, ("heads", "mlp")), (0.5, ("heads", "mlp", "stream"))],
    "convnext_tiny": [(0.5, ("mlp",)), (0.5, ("stream",)), (0.5, ("mlp", "stream"))],
}


def kind(g) -> str:  # type: ignore[no-untyped-def]
    """heads, stream or mlp."""
    return "heads" if g.class_width > 1 else "stream" if g.stats else "mlp"


def variant_plan(a: Analysis, kinds: tuple[str, ...], target: float, round_to: str, cache: ImportanceCache):  # type: ignore[no-untyped-def]
    """One keep ratio over the groups of `kinds`, bisected to `target` of the MACs (as close from below as
    the rounding allows; the deepest plan when the target is out of reach)."""
    groups = [g for g in a.prunable_groups() if kind(g) in kinds]

    def counts(t: float) -> dict[int, int]:
        return {g.id: round_count(t * g.size, g.size, round_to, g.class_width) for g in groups}

    lo, hi = 0.0, 1.0
    best = counts(0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if a.cost.macs(counts(mid)) <= target * a.cost.total_macs:
            lo, best = mid, counts(mid)
        else:
            hi = mid
    return plan_from_counts(a, best, cache)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(VARIANTS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--round-to", default="auto")
    p.add_argument("--out", default="benchmarks/transformer_latency")
    args = p.parse_args(argv)
    round_to = parse_round_to(args.round_to)
    out = ROOT / args.out
    results = {"command": shlex.join(["python", "benchmarks/transformer_latency.py", *argv]),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)", "round_to": round_to,
               "threads": args.threads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = export_fixture(name, Path(tmp), opset=17).path
            a = analyze(load(path))
            cache = ImportanceCache(a, "l1")
            protos, labels, rows = [a.model.proto], ["original"], []
            for target, kinds in VARIANTS[name]:
                plan = variant_plan(a, kinds, target, round_to, cache)
                pruned = prune(a, plan)
                label = f"{'+'.join(kinds)} @{target}"
                macs = count_macs(pruned) / a.cost.total_macs
                kept = {k: [(len(plan.kept[g.id]), g.size) for g in a.prunable_groups() if kind(g) == k
                            and g.id in plan.kept and len(plan.kept[g.id]) < g.size] for k in kinds}
                rows.append({"variant": label, "macs_ratio": round(macs, 4), "kept": kept})
                protos.append(pruned)
                labels.append(label)
            load0, t0 = os.getloadavg(), time.time()
            res = bench(protos, args.batches, threads=args.threads, repeats=args.repeats, labels=labels)
            load1 = os.getloadavg()
            results["models"][name] = {"variants": rows, "bench": res.to_json(), "seconds": round(time.time() - t0),
                                       "load_before": [round(v, 2) for v in load0],
                                       "load_after": [round(v, 2) for v in load1]}
            print(json.dumps({"model": name, "rows": rows, "load": [load0, load1]}), flush=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(results))
    return 0


def render(results: dict) -> str:
    """The markdown table: per model, variant, batch: median ms and speed-up vs the original."""
    lines = ["# Transformer latency by pruning axis (issue 15)", "",
             f"ORT CPU, {results['threads']} intra-op thread(s), interleaved (3 sessions per model, the fastest "
             f"reported), rounding `{results['round_to']}`; {results['machine']}.", "",
             "| model | variant | MACs kept | batch | median ms | speed-up vs original |", "|---|---|---:|---:|---:|---:|"]
    for name, m in results["models"].items():
        by = {(r["model"], r["batch"]): r for r in m["bench"]["results"]}
        macs = {v["variant"]: v["macs_ratio"] for v in m["variants"]}
        for label in m["bench"]["models"]:
            for b in m["bench"]["batches"]:
                r = by[(label, b)]
                lines.append(f"| {name} | {label} | {macs.get(label, 1.0):.3f} | {b} | {r['median_ms']:.2f} | "
                             f"{r['speedup']:.2f}x |")
        lines.append(f"| {name} | (load average before -> after: {m['load_before'][0]:.1f} -> "
                     f"{m['load_after'][0]:.1f}; {m['seconds']} s) | | | | |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
