"""`agmc-onnx inspect`: totals and the channel groups of a model (prunable or frozen and why)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(model: str, as_json: bool) -> None:
    """Show MACs, params and the channel-dependency groups of MODEL."""
    from agmc_onnx.api import analyze, summarize

    info = summarize(analyze(model))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    console = Console(width=140)
    console.print(
        f"[bold]{model}[/bold]: opset {info['opset']}, {info['nodes']} nodes, {info['macs']:,} MACs, "
        f"{info['params']:,} params; {info['prunable_groups']}/{info['groups']} groups prunable "
        f"({info['prunable_channels']} channels), {info['frozen_channels']} channels frozen "
        f"({100 * info['frozen_share']:.1f}% besides graph outputs, untracked layers counted)"
    )
    table = Table(show_lines=False)
    for col in ("group", "size", "MACs share", "status", "producers"):
        table.add_column(col)
    for g in info["group_table"]:
        status = "prunable" if g["prunable"] else f"frozen: {g['frozen_reason']}"
        prods = ", ".join(g["producers"][:2]) + (f" (+{len(g['producers']) - 2})" if len(g["producers"]) > 2 else "")
        table.add_row(str(g["id"]), str(g["size"]), f"{100 * g['macs_share']:.1f}%", status, prods)
    console.print(table)
