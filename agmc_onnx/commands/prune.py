"""`agmc-onnx prune`: plan with a strategy, cut the channels, write the smaller ONNX and a report."""

from __future__ import annotations

import contextlib
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agmc_onnx.api import default_output, prune_model
from agmc_onnx.commands._options import finish_prune, prune_run_options
from agmc_onnx.strategies import REGISTRY, SEARCH_STRATEGIES


@click.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target-flops", type=str, default=None, help="Kept MACs as a fraction of the original, in (0, 1].")
@click.option("--strategy", type=str, default=None,
              help=f"Channel selection: {', '.join(sorted(REGISTRY))} (default: agmc with --data, else uniform).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), default=None,
              help="JSON plan {group id: keep ratio or [kept indices]} (implies --strategy plan).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default MODEL.pruned.onnx; never the input).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@click.option("--round-to", default="auto", show_default=True,
              help="Kept widths are multiples of N; auto: per group, the runtime block (16 with AVX-512, else 8) "
                   "for wide groups, down to 4 so each group keeps >= 4 widths; auto:B sets the block.")
@click.option("--importance", type=click.Choice(["l1", "l2", "bn"]), default="l1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Labelled data (train [+ test]) for search strategies: reward split, BN calibration, report.")
@click.option("--episodes", type=int, default=None,
              help="Search episodes (agmc, amc, random; default 300 on a GPU, 100 on a CPU).")
@click.option("--agent", type=click.Choice(["ddpg", "ppo"]), default="ddpg", show_default=True,
              help="agmc / amc learner: AMC's DDPG, or PPO with a Beta policy (GNN-RL's choice; no random warm-up).")
@click.option("--decoder", type=click.Choice(["groups", "lstm"]), default="groups", show_default=True,
              help="agmc state per step: the group's GNN embedding, or the paper's LSTM over the graph embedding.")
@click.option("--policy", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start from a saved policy (--episodes 0: zero-shot).")
@click.option("--save-policy", type=click.Path(dir_okay=False), default=None, help="Write the trained encoder + actor here.")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="Search checkpoint directory (default OUTPUT.search/).")
@click.option("--resume", is_flag=True, help="Continue the search from its checkpoint.")
@click.option("--bn-recalibrate/--no-bn-recalibrate", default=True, show_default=True,
              help="With --data: re-estimate BN statistics of every scored candidate and of the written model.")
@click.option("--reward-images", type=int, default=None,
              help="Size of the reward split (train data; default 2000 on a GPU, 1000 on a CPU).")
@prune_run_options
def prune_cmd(model: str, target_flops: str | None, strategy: str | None, plan_path: str | None, output: str | None,
              report: str | None, round_to: str, importance: str, seed: int, data: str | None, episodes: int,
              agent: str, decoder: str, policy: str | None, save_policy: str | None, checkpoint: str | None, resume: bool,
              bn_recalibrate: bool, reward_images: int | None, **kw: Any) -> None:
    """Prune MODEL's channels to --target-flops and/or --target-latency / --target-speedup (or as --plan says)."""
    if strategy is None:
        strategy = "agmc" if data is not None and plan_path is None else "uniform"
    if plan_path is not None and strategy == "uniform":
        strategy = "plan"
    target = None
    if target_flops is not None:
        try:
            target = float(target_flops)
        except ValueError:
            from agmc_onnx.errors import InputError

            raise InputError(f"--target-flops must be a number in (0, 1], got {target_flops!r}") from None
    out = output or str(default_output(model))
    latency = {"target_latency_ms": kw.pop("target_latency", None), "target_speedup": kw.pop("target_speedup", None),
               "latency_batch": kw.pop("latency_batch", 1), "latency_cache": kw.pop("latency_cache", None),
               "provider": kw.get("provider", "cpu"), "threads": kw.get("threads"),
               "latency_rounds": kw.pop("latency_rounds", 2)}  # fmt: skip
    if latency["target_latency_ms"] is None and latency["target_speedup"] is None:
        latency = {}
    accuracy = None
    if strategy in SEARCH_STRATEGIES or data is not None:
        from agmc_onnx.search import ProgressBar, search_defaults, search_prune

        if data is None:
            from agmc_onnx.errors import InputError

            raise InputError(f"--strategy {strategy} scores candidates on data: give --data DIR", model)
        defaults = search_defaults(None, episodes, reward_images)
        searching = strategy in SEARCH_STRATEGIES
        if searching:
            click.echo(defaults.note(), err=True)
        with ProgressBar(defaults.episodes, strategy) if searching else contextlib.nullcontext() as bar:
            searched = search_prune(
                model, target, strategy, data=data, episodes=defaults.episodes, seed=seed, output=out,
                report=report, round_to=round_to, importance=importance, checkpoint=checkpoint, resume=resume,
                policy=policy, save_policy=save_policy, bn_recalibrate=bn_recalibrate,
                reward_images=defaults.reward_images, agent=agent, decoder=decoder, progress=bar, latency=latency, plan=plan_path,
            )  # fmt: skip
        result, accuracy = searched.prune, searched.report.get("accuracy")
    else:
        result = prune_model(
            model, target, strategy, plan=plan_path, round_to=round_to, importance=importance, output=out,
            report=report, seed=seed, **latency,
        )
    rep = result.report
    console = Console(width=120)
    table = Table(title=f"{model} -> {out} ({strategy})")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col)
    b, a = rep["before"], rep["after"]
    table.add_row("MACs", f"{b['macs']:,}", f"{a['macs']:,}", f"{a['macs'] / max(b['macs'], 1):.4f}")
    table.add_row("params", f"{b['params']:,}", f"{a['params']:,}", f"{a['params'] / max(b['params'], 1):.4f}")
    for split, acc in (accuracy or {}).items():
        if acc:
            label = f"{split.replace('_', '-')} accuracy ({acc['images']} images)"
            table.add_row(label, f"{100 * acc['original']:.2f}%", f"{100 * acc['pruned']:.2f}%",
                          f"{100 * (acc['pruned'] - acc['original']):+.2f} pts")  # fmt: skip
    console.print(table)
    pruned = sum(1 for g in rep["groups"] if g["kept_count"] < g["size"])
    steps = sorted({g["round_step"] for g in rep["groups"] if g.get("round_step")})
    console.print(f"{pruned} of {len(rep['groups'])} groups pruned; round-to {rep['round_to']}"
                  f" (steps {'/'.join(map(str, steps)) or '-'})")
    for note in result.notes:
        click.echo(f"agmc-onnx: warning: {note}", err=True)
    finish_prune(model, out, rep, report, kw)
