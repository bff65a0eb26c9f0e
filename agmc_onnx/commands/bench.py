"""`agmc-onnx bench`: ORT latency of one model, or several side by side, with speed-ups."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from agmc_onnx import bench
from agmc_onnx.commands._options import BATCHES, input_shape_option, input_shapes_from


@click.command("bench")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--compare", "others", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Another model to time in the same interleaved run (repeatable).")  # fmt: skip
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch", "batch", type=BATCHES, default="1", show_default=True, help="Batch sizes, e.g. 1,64.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ORT intra-op threads.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--sessions", type=click.IntRange(min=1), default=bench.SESSIONS, show_default=True,
              help="ORT sessions per model, all interleaved; each model is reported by its fastest.")
@click.option("--profile", "top", type=click.IntRange(min=0), default=0,
              help="Also profile each model and list its N most costly layers.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@input_shape_option
def bench_cmd(
    model: str,
    others: tuple[str, ...],
    provider: str,
    batch: tuple[int, ...],
    threads: int | None,
    warmup: int,
    repeats: int,
    sessions: int,
    top: int,
    as_json: bool,
    input_shape: tuple[str, ...],
) -> None:
    """Time MODEL (and --compare models) in ONNX Runtime: median, p90 and speed-up vs MODEL."""
    from agmc_onnx.workflows.validate import validate_bench

    batches = list(batch)
    sizes = input_shapes_from({"input_shape": input_shape})
    request = validate_bench([model, *others], provider, threads, sizes)  # every file readable and runnable first
    result = bench.bench(request.protos, batches, provider=provider, threads=threads, warmup=warmup, repeats=repeats,
                         labels=request.labels, sessions=sessions, input_shapes=sizes)  # fmt: skip
    profiles = {}
    if top:
        for label, proto in zip(result.models, request.protos, strict=True):
            profiles[label] = bench.profile(proto, batches[0], provider, threads, input_shapes=sizes)[:top]
    if as_json:
        doc = result.to_json()
        if profiles:
            doc["profile"] = {k: [vars(c) for c in v] for k, v in profiles.items()}
        click.echo(json.dumps(doc, indent=2))
        return
    rows = bench.format_table(result)
    table = Table(title=f"ONNX Runtime latency ({provider}, threads={threads or 'default'}, {repeats} runs, "
                        f"fastest of {sessions} sessions)")  # fmt: skip
    for head in rows[0]:
        table.add_column(head, justify="left" if head == "model" else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for label, costs in profiles.items():
        ptable = Table(title=f"{label}: most costly layers at batch {batches[0]}")
        for head in ("node", "op", "us/run", "share"):
            ptable.add_column(head)
        for c in costs:
            ptable.add_row(c.node, c.op, f"{c.mean_us:.1f}", f"{100 * c.share:.1f}%")
        console.print(ptable)
