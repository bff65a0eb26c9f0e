"""One model analysed: its channel-dependency groups (agmc_onnx.groups) and its cost model (agmc_onnx.cost)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from agmc_onnx.cost import CostModel, build_cost_model
from agmc_onnx.groups import ChannelLayout, find_groups
from agmc_onnx.model import ModelGraph


@dataclass(kw_only=True)
class Analysis(ChannelLayout):
    """Groups, channel layout, cost model and frozen channels of one model: what strategies and surgery read."""

    model: ModelGraph
    cost: CostModel


def analyze(model: ModelGraph) -> Analysis:
    """Find the channel groups of a model and build its cost model."""
    layout = find_groups(model)
    cost = build_cost_model(model, layout)
    return Analysis(**{f.name: getattr(layout, f.name) for f in fields(ChannelLayout)}, model=model, cost=cost)
