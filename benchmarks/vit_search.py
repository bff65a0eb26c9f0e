"""The small ViT fixture searched at 50% MACs (issue 15): agmc vs uniform vs l1-global, test accuracy before and
after fine-tuning, side by side. Each strategy is one `agmc-onnx prune` run, end to end, exactly as a user
types it (the written model, its report and its self-check included):

    python benchmarks/vit_search.py --model fixtures/models/vit_tiny.onnx --data fixtures/data \
        --finetune-epochs 5 --out benchmarks/vit_search_cpu

Writes OUT/vit_search.md and OUT/vit_search.json (every run's command, report figures, wall time and the
machine's load average before and after it), and keeps the reports (OUT/<strategy>.report.json). The pruned
models themselves are not kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(strategy: str, args: argparse.Namespace, out: Path, tmp: Path) -> dict:
    """One `agmc-onnx prune` run; returns its figures."""
    report = out / f"{strategy}.report.json"
    cmd = [sys.executable, "-m", "agmc_onnx.cli", "prune", args.model, "--target-flops", str(args.target),
           "--data", args.data, "--strategy", strategy, "--finetune-epochs", str(args.finetune_epochs),
           "--seed", str(args.seed), "--no-bench", "-o", str(tmp / f"{strategy}.onnx"), "--report", str(report)]
    if strategy in ("agmc", "amc"):
        cmd += ["--episodes", str(args.episodes), "--checkpoint", str(tmp / f"{strategy}.search")]
    load0, t0 = os.getloadavg(), time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.torch_threads)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, load1 = time.time() - t0, os.getloadavg()
    row = {"strategy": strategy, "command": shlex.join(["agmc-onnx", *cmd[3:]]), "exit": proc.returncode,
           "seconds": round(wall, 1), "load_before": [round(v, 2) for v in load0],
           "load_after": [round(v, 2) for v in load1]}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
        return row
    return figures(row, report)


def figures(row: dict, report: Path) -> dict:
    """A run's row with the figures of its report: test accuracy of each stage, MACs kept, kept channels."""
    rep = json.loads(report.read_text())
    stages = rep.get("models", {})
    row.update(
        original=stages.get("original", {}).get("accuracy"), pruned=stages.get("pruned", {}).get("accuracy"),
        finetuned=stages.get("finetuned", {}).get("accuracy"), macs_ratio=rep.get("macs_ratio"),
        kept={g["id"]: (g["kept_count"], g["size"]) for g in rep.get("groups", []) if g["prunable"]},
    )
    return row


def render(rows: list[dict], meta: dict) -> str:
    """The markdown summary."""
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [
        "# ViT fixture at 50% MACs: agmc vs uniform vs l1-global (issue 15)", "",
        f"Model `{meta['model']}` (original test accuracy {pct(rows[0].get('original'))}% on the shipped "
        f"{meta['test_images']} test images), `--target-flops {meta['target']}`, `--data {meta['data']}`, "
        f"fine-tuned {meta['finetune_epochs']} epochs (the prune command's `--finetune-epochs`), agmc "
        f"{meta['episodes']} episodes, seed {meta['seed']}, OMP_NUM_THREADS={meta['torch_threads']}. Test accuracy (%) of "
        "the written file in ONNX Runtime.", "",
        "| strategy | MACs kept | test acc. before fine-tuning | after fine-tuning | wall (s) | load avg before -> after |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("exit"):
            lines.append(f"| {r['strategy']} | failed (exit {r['exit']}) | | | {r['seconds']} | |")
            continue
        lines.append(f"| {r['strategy']} | {r['macs_ratio']:.4f} | {pct(r['pruned'])} | {pct(r['finetuned'])} | "
                     f"{r['seconds']:.0f} | {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
    lines += ["", "Kept channels per prunable group (kept / size):", ""]
    for r in rows:
        if not r.get("exit"):
            lines.append(f"- {r['strategy']}: " + ", ".join(f"g{g} {k}/{n}" for g, (k, n) in r["kept"].items()))
    lines += ["", "Commands:", "", "```", *[r["command"] for r in rows], "```", "",
              f"Benchmark command: `{meta['command']}`", "",
              f"Machine: {meta['machine']}; {os.cpu_count()} CPUs, shared with other jobs (load averages above).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fixtures/models/vit_tiny.onnx")
    p.add_argument("--data", default="fixtures/data")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--strategies", nargs="+", default=["agmc", "uniform", "l1-global"])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="OMP_NUM_THREADS of each run (fine-tuning): on 2 shared cores 1 thread ran ~10x faster than 2")
    p.add_argument("--out", default="benchmarks/vit_search_cpu")
    p.add_argument("--render", action="store_true", help="re-read OUT's reports into OUT/vit_search.{json,md}")
    args = p.parse_args(argv)
    out = ROOT / args.out
    if args.render:
        done = json.loads((out / "vit_search.json").read_text())
        rows = [figures(r, out / f"{r['strategy']}.report.json") if not r.get("exit") else r for r in done["rows"]]
        (out / "vit_search.json").write_text(json.dumps({"meta": done["meta"], "rows": rows}, indent=2) + "\n")
        (out / "vit_search.md").write_text(render(rows, done["meta"]))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.strategies:
            rows.append(run_one(s, args, out, Path(tmp)))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "kept"}), flush=True)
    meta = {"model": args.model, "data": args.data, "target": args.target, "finetune_epochs": args.finetune_epochs,
            "episodes": args.episodes, "seed": args.seed, "test_images": 2000, "torch_threads": args.torch_threads,
            "command": shlex.join(["python", "benchmarks/vit_search.py", *argv]),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    (out / "vit_search.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "vit_search.md").write_text(render(rows, meta))
    return 0 if all(r.get("exit") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
