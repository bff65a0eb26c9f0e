"""`agmc-onnx prune`: plan with a strategy, cut the channels, write the smaller ONNX and a report."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agmc_onnx.commands._options import (
    distill_from,
    gates_from,
    input_shapes_from,
    preprocess_from,
    prune_run_options,
    render_run,
)
from agmc_onnx.report import enforce
from agmc_onnx.rl import ENCODERS
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
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Data for search strategies (reward split, BN calibration, report): labelled (IDX, CIFAR, class "
                   "folders, .npz x/y) or not (a flat folder of images or video frames, an .npy/.npz of images or "
                   "of input tensors by input name).")
@click.option("--reward", type=click.Choice(["accuracy", "fidelity"]), default=None,
              help="Search reward: top-1 accuracy on the labels, or fidelity to the original's outputs (every "
                   "output; no labels needed). Default: accuracy with labels, fidelity without.")
@click.option("--episodes", type=click.IntRange(min=0), default=None,
              help="Search episodes (agmc, amc, random; default 300 on a GPU, 100 on a CPU).")
@click.option("--agent", type=click.Choice(["ddpg", "ppo"]), default="ddpg", show_default=True,
              help="agmc / amc learner: AMC's DDPG, or PPO with a Beta policy (GNN-RL's choice; no random warm-up).")
@click.option("--decoder", type=click.Choice(["groups", "lstm", "stepwise"]), default="groups", show_default=True,
              help="agmc state per step: the group's GNN embedding, the paper's LSTM over the graph embedding, or "
                   "the graph re-encoded as pruned so far at every step (GNN-RL's state; DDPG only).")
@click.option("--encoder", type=click.Choice(ENCODERS), default="auto", show_default=True,
              help="agmc's GNN: left as the seed built it (only the agent learns) or trained with the actor (the "
                   "paper). auto: frozen with --decoder groups (ahead on the held-out models), else trained.")
@click.option("--policy", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start from a saved policy (--episodes 0: zero-shot).")
@click.option("--save-policy", type=click.Path(dir_okay=False), default=None, help="Write the trained encoder + actor here.")
@click.option("--checkpoint", type=click.Path(file_okay=False), default=None,
              help="Search checkpoint directory (default OUTPUT.search/).")
@click.option("--resume", is_flag=True, help="Continue the search from its checkpoint.")
@click.option("--bn-recalibrate/--no-bn-recalibrate", default=True, show_default=True,
              help="With --data: re-estimate BN statistics of every scored candidate and of the written model.")
@click.option("--reward-images", type=click.IntRange(min=1), default=None,
              help="Size of the reward split (train data; default 2000 on a GPU, 1000 on a CPU).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Score N candidates at once on N Ray workers (one per GPU, else one per core), N episodes "
                   "per policy version; needs the ray extra: pip install 'agmc-onnx[cpu,ray]'.")
@click.option("--ray-address", type=str, default=None,
              help="Join this Ray cluster for --workers (default: a private Ray on this machine); agmc-onnx must "
                   "be installed on its nodes.")
@prune_run_options
def prune_cmd(model: str, target_flops: str | None, strategy: str | None, plan_path: str | None, output: str | None,
              report: str | None, round_to: str, importance: str, seed: int, data: str | None, episodes: int,
              agent: str, decoder: str, encoder: str, policy: str | None, save_policy: str | None, checkpoint: str | None, resume: bool,
              bn_recalibrate: bool, reward_images: int | None, workers: int, ray_address: str | None,
              reward: str | None, **kw: Any) -> None:
    """Prune MODEL's channels to --target-flops and/or --target-latency / --target-speedup (or as --plan says)."""
    from agmc_onnx.errors import InputError
    from agmc_onnx.workflows.options import PruneOptions
    from agmc_onnx.workflows.validate import validate_prune

    target = None
    if target_flops is not None:
        try:
            target = float(target_flops)
        except ValueError:
            raise InputError(f"--target-flops must be a number in (0, 1], got {target_flops!r}") from None
    opts = PruneOptions(
        target_flops=target, strategy=strategy, plan=plan_path, output=output, report=report, round_to=round_to,
        importance=importance, seed=seed, data=data, episodes=episodes, reward_images=reward_images, agent=agent,
        decoder=decoder, encoder=encoder, policy=policy, save_policy=save_policy, checkpoint=checkpoint, resume=resume,
        bn_recalibrate=bn_recalibrate, finetune_epochs=kw.pop("finetune_epochs"), distill=kw.pop("distill"),
        bench=kw.pop("do_bench"), bench_batches=kw.pop("bench_batch"),
        bench_repeats=kw.pop("bench_repeats"), provider=kw.pop("provider"), threads=kw.pop("threads"),
        target_latency_ms=kw.pop("target_latency"), target_speedup=kw.pop("target_speedup"),
        latency_batch=kw.pop("latency_batch"), latency_cache=kw.pop("latency_cache"),
        latency_rounds=kw.pop("latency_rounds"), preprocess=preprocess_from(kw), sidecar=kw.pop("sidecar"),
        gates=gates_from(kw), workers=workers, ray_address=ray_address, reward=reward, augment=kw.pop("augment"),
        recipe=distill_from(kw), input_shapes=input_shapes_from(kw),
    )  # fmt: skip
    request = validate_prune(model, opts)  # every flag, path and input, before torch is imported
    from agmc_onnx.api import run_prune, search_defaults

    chosen = request.strategy
    searching = chosen in SEARCH_STRATEGIES and data is not None
    bar: Any = contextlib.nullcontext()
    if searching:
        defaults = search_defaults(None, episodes, reward_images)
        click.echo(defaults.note(), err=True)
        opts.episodes, opts.reward_images = defaults.episodes, defaults.reward_images
        bar = ProgressBar(defaults.episodes, chosen, workers)
    warned = _Warnings()
    with bar as progress:
        run = run_prune(model, opts, progress=progress, warn=warned, request=request, note=_note)
    rep = run.report
    console = Console(width=120)
    table = Table(title=f"{model} -> {run.output} ({run.strategy})")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col)
    b, a = rep["models"]["original"], rep["models"]["pruned"]  # the report's own counts: table == JSON == markdown
    for label, key in (("MACs", "macs"), ("params", "params")):
        ratio = a[key] / b[key] if b[key] else None
        table.add_row(label, f"{b[key]:,}", f"{a[key]:,}", "-" if ratio is None else f"{ratio:.4f}")
    for split, acc in (rep.get("accuracy") or {}).items():
        if acc:
            label = f"{split.replace('_', '-')} accuracy ({acc['images']} images)"
            table.add_row(label, f"{100 * acc['original']:.2f}%", f"{100 * acc['pruned']:.2f}%",
                          f"{100 * (acc['pruned'] - acc['original']):+.2f} pts")  # fmt: skip
    for split, fid in (rep.get("fidelity") or {}).items():
        if fid:
            label = f"{split.replace('_', '-')} fidelity ({fid['images']} inputs)"
            table.add_row(label, "100.00%", f"{100 * fid['pruned']:.2f}%", f"{100 * (fid['pruned'] - 1):+.2f} pts")
    console.print(table)
    pruned = sum(1 for g in rep["groups"] if g["kept_count"] < g["size"])
    steps = sorted({g["round_step"] for g in rep["groups"] if g.get("round_step")})
    console.print(f"{pruned} of {len(rep['groups'])} groups pruned; round-to {rep['round_to']}"
                  f" (steps {'/'.join(map(str, steps)) or '-'})")
    for note in run.notes:
        warned(note)
    render_run(rep)
    for warning in rep["warnings"][len(run.notes):]:
        warned(warning)
    enforce(rep)


class _Warnings:
    """Prints each warning on stderr once: as it happens during the run, or at the end."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            click.echo(f"agmc-onnx: warning: {message}", err=True)


def _note(message: str) -> None:
    """What the run decided for the user, on stderr as it happens."""
    click.echo(f"agmc-onnx: note: {message}", err=True)


class ProgressBar:
    """A live rich progress bar for the search: episode, reward, best, MACs, episodes per second, workers' scoring time."""

    def __init__(self, episodes: int, label: str = "search", workers: int = 1) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)  # fmt: skip
        self.task = self.progress.add_task(label, total=max(1, episodes), info="")
        # A log (CI, a file) gets no live bar: one plain line every tenth of the episodes instead.
        self.plain = not self.progress.console.is_terminal
        self.label, self.episodes, self.every = label, max(1, episodes), max(1, episodes // 10)
        self.started = time.perf_counter()
        self.workers = workers
        self.scoring: dict[int, list[float]] = {}  # worker -> [candidates, seconds]
        self.seen = 0
        self.wall = 0.0  # the episodes' own seconds (worker start-up excluded)

    def __enter__(self) -> ProgressBar:
        if not self.plain:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.plain:
            self.progress.stop()

    def __call__(self, e: Any) -> None:
        """Advance to episode e (an agmc_onnx.rl.search.Episode)."""
        self.seen += 1
        self.wall += e.seconds
        if getattr(e, "worker", None) is not None:
            n_s = self.scoring.setdefault(e.worker, [0, 0.0])
            n_s[0] += 1
            n_s[1] += e.score_seconds
        self.progress.update(self.task, completed=e.episode + 1, info=self.info(e))
        done = e.episode + 1
        if self.plain and (done % self.every == 0 or done == self.episodes):
            click.echo(f"{self.label}: episode {done}/{self.episodes}  {self.info(e)}  "
                       f"{time.perf_counter() - self.started:.0f} s", err=True)  # fmt: skip

    def info(self, e: Any) -> str:
        """Reward, best, MACs, episodes per second, and the workers' mean scoring seconds per candidate."""
        rate = self.seen / self.wall if self.wall > 0 else 0.0
        each = "/".join(f"{s / n:.2f}" for _, (n, s) in sorted(self.scoring.items()) if n) or "-"
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"reward {e.reward:.4f}  best {e.best:.4f}  MACs {e.macs_ratio:.3f}  {rate:.2f} ep/s  {workers} {each} s"
