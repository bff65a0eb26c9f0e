"""State sources: the hybrid decoder is the GNN's state with AMC's hand-made row appended (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agmc_onnx.api import analyze
from agmc_onnx.rl import DDPG
from agmc_onnx.rl.env import DYN_FEATURES
from agmc_onnx.rl.runner import build_agent
from agmc_onnx.rl.states import GraphStates, HandStates, HybridStates


def test_hybrid_rows_are_the_graph_rows_then_the_hand_rows(net: Path) -> None:
    """Same encoder: the first columns equal GraphStates', the last AMC's table; gradients reach the encoder."""
    a = analyze(net)
    hybrid = HybridStates(a)
    table = hybrid()
    graph = GraphStates(a, encoder=hybrid.encoder)()
    hand = HandStates(a)()
    assert table.shape == (hand.size(0), hybrid.dim) and hybrid.dim == graph.size(1) + hand.size(1)
    assert torch.equal(table[:, : graph.size(1)], graph)
    assert torch.equal(table[:, graph.size(1):], hand)
    table.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in hybrid.encoder.parameters())


def test_hybrid_decoder_builds_an_agent_that_acts(net: Path) -> None:
    """options decoder='hybrid' reaches the agent; its actions are keep ratios within [a_min, 1]."""
    a = analyze(net)
    steps = len(a.prunable_groups())
    agent = build_agent("agmc", a, steps, seed=0, options={"decoder": "hybrid"})
    assert isinstance(agent, DDPG) and isinstance(agent.source, HybridStates)
    assert agent.policy_dict()["decoder"] == "hybrid"
    agent.begin_episode()
    dyn = np.zeros(DYN_FEATURES, dtype=np.float32)
    actions = [agent.act(t, dyn, explore=False) for t in range(steps)]
    assert all(agent.cfg.a_min <= x <= 1.0 for x in actions)
