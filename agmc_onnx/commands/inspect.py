"""`agmc-onnx inspect`: totals and the channel groups of a model (prunable or frozen and why)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agmc_onnx.commands._options import input_shape_option, input_shapes_from


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@input_shape_option
def inspect_cmd(model: str, as_json: bool, input_shape: tuple[str, ...]) -> None:
    """Show MACs, params and the channel-dependency groups of MODEL."""
    from agmc_onnx.workflows.validate import validate_inspect

    graph = validate_inspect(model, input_shapes_from({"input_shape": input_shape}))  # the file read and checked (weights included) before anything else
    from agmc_onnx.api import analyze, summarize

    info = summarize(analyze(graph))
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
    sizes = info["input_shapes"]
    if sizes and (sizes["dynamic"] or sizes["source"] != "file"):
        shown = ", ".join(f"{n} [{', '.join(map(str, d))}]" for n, d in sizes["dims"].items())
        console.print(f"analysed at {shown} ({'from ' + sizes['source'] if sizes['source'] != 'file' else 'the file'}; "
                      "the file's sizes stay dynamic)", markup=False)  # fmt: skip
    for note in info["notes"]:
        console.print(f"note: {note}", markup=False)
    for body in info["uncounted"]:
        console.print(f"note: the {body['mac_ops']} MAC op(s) inside {body['op']} {body['node']}'s body are not "
                      "counted in MACs (and not pruned)", markup=False)  # fmt: skip
    if info["why_nothing_prunable"]:
        console.print(f"nothing prunable: {info['why_nothing_prunable']}", markup=False)
    table = Table(show_lines=False)
    for col in ("group", "size", "MACs share", "status", "producers"):
        table.add_column(col)
    for g in info["group_table"]:
        status = "prunable" if g["prunable"] else f"frozen: {g['frozen_reason']}"
        prods = ", ".join(g["producers"][:2]) + (f" (+{len(g['producers']) - 2})" if len(g["producers"]) > 2 else "")
        table.add_row(str(g["id"]), str(g["size"]), f"{100 * g['macs_share']:.1f}%", escape(status), escape(prods))
    console.print(table)
