"""Reshape and Expand rules (agmc_onnx/ops/reshape.py) and their ShapeChannel rewrite."""

from __future__ import annotations

from agmc_onnx.ops.reshape import ShapeChannel


def test_channel_shuffle_unites_in_group_positions(analyses: dict) -> None:
    """Shuffle of b's 8 channels in 2 groups: channel j of each group is one class (4 classes), so both
    groups keep the same channels and the Reshape stays valid; a and c stay prunable."""
    a = analyses["shuffle"]
    status = {g.producers[0].split("/")[1]: g for g in a.groups}
    assert status["a"].prunable and status["c"].prunable
    b = status["b"]
    assert b.prunable and b.size == 4
    producer = next(m for m in b.members if m.role == "producer" and m.axis == 0)
    assert producer.channels == (0, 1, 2, 3, 0, 1, 2, 3)
    consumer = next(m for m in b.members if m.role == "consumer")
    assert consumer.channels == (0, 0, 1, 1, 2, 2, 3, 3)  # c reads the shuffled order
    assert [type(r) for _, r in a.hooks].count(ShapeChannel) == 2
