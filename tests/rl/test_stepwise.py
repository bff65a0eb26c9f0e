"""Per-step re-encoding (issue 19): the state of step t is read from the graph as pruned before t."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

from agmc_onnx.api import analyze
from agmc_onnx.cli import main
from agmc_onnx.encoder import features as cols
from agmc_onnx.rl.states import GraphStates, StepGraphStates
from tests.rl.recording import run_case, summary


def test_nothing_cut_reads_the_one_shot_table(net: Path) -> None:
    """With every ratio 1 the re-encoded rows are the one-shot table's (the batched encoder equals the single one)."""
    a = analyze(net)
    torch.manual_seed(0)
    step = StepGraphStates(a)
    torch.manual_seed(0)
    one = GraphStates(a)
    table = one()
    steps = torch.arange(table.size(0))
    rows = step.rows(steps, torch.ones(len(steps), table.size(0)))
    assert torch.allclose(rows, table, atol=1e-5)
    assert torch.allclose(step(), table)


def test_rows_see_what_was_cut_and_batch_like_single_copies(net: Path) -> None:
    """Cutting step 0's group changes the state of step 1 (not its own); a batch equals its copies one by one;
    the widths in the node features follow the ratios."""
    a = analyze(net)
    src = StepGraphStates(a)
    t = src().size(0)
    assert t >= 2
    prefixes = torch.ones(3, t)
    prefixes[1, 0], prefixes[2, 0] = 0.5, 0.25
    steps = torch.tensor([1, 1, 1])
    with torch.no_grad():
        rows = src.rows(steps, prefixes)
        single = torch.cat([src.rows(steps[i : i + 1], prefixes[i : i + 1]) for i in range(3)])
    assert torch.allclose(rows, single, atol=1e-5)
    assert not torch.allclose(rows[0], rows[1]) and not torch.allclose(rows[1], rows[2])
    x = src.node_features(prefixes)
    produces = src.out_idx == 0
    assert produces.any()
    j = cols.NUMERIC + cols.C_OUT
    assert torch.all(x[1, produces, j] < x[0, produces, j]) and torch.all(x[2, produces, j] < x[1, produces, j])
    untouched = (src.out_idx != 0) & (src.in_idx != 0)
    assert torch.equal(x[1, untouched], x[0, untouched])


def test_a_stepwise_search_runs_learns_and_repeats(net: Path, data: Any, tmp_path: Path) -> None:
    """agmc with per-step re-encoding: the DDPG agent learns from re-encoded minibatches, same seed -> same run,
    and the plan meets the target."""
    case: dict[str, Any] = {"strategy": "agmc", "seed": 3, "episodes": 8, "warmup": 3, "decoder": "stepwise",
                            "options": {"batch": 8, "critic_warmup": 5}}  # fmt: skip
    first = run_case(net, data, tmp_path / "a", case)
    again = run_case(net, data, tmp_path / "b", case)
    assert summary(again.search) == summary(first.search)
    assert [e.kind for e in first.search.curve] == ["random"] * 3 + ["explore"] * 5
    assert first.report["macs_ratio"] <= 0.5 * 1.01
    plain = run_case(net, data, tmp_path / "c", {**case, "decoder": "groups"})
    assert summary(plain.search)["curve"][:3] == summary(first.search)["curve"][:3]  # the warm-up is the same


def test_stepwise_with_ppo_is_refused_up_front(net: Path) -> None:
    """The CLI refuses --decoder stepwise with --agent ppo before any work (exit 2, one line naming both)."""
    out = CliRunner().invoke(main, ["prune", str(net), "--target-flops", "0.5", "--data", "fixtures/data",
                                    "--decoder", "stepwise", "--agent", "ppo", "-o", str(net.with_name("o.onnx"))])
    assert out.exit_code == 2 and "--decoder stepwise" in out.stderr and "--agent ddpg" in out.stderr
