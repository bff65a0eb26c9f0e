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

    def untracked(self) -> list[tuple[str, int]]:
        """(node, output width) of every layer with a constant weight whose output channels fall out of every
        group (no rule reached them: frozen in effect, though no group says so)."""
        producers = {n for g in self.groups for n in g.producers}
        out = []
        for node in self.model.nodes:
            w = self.model.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            if node.name in producers or node.output[0] in self.tensor_ids or w is None or w.ndim < 2 or node.op_type not in _OUT_AXIS:
                continue
            axis = _OUT_AXIS[node.op_type]
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
                axis = 0
            groups = next((a.i for a in node.attribute if a.name == "group"), 1) if node.op_type == "ConvTranspose" else 1
            out.append((node.name, int(w.shape[axis]) * int(groups)))
        return out


_OUT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def analyze(model: ModelGraph) -> Analysis:
    """Find the channel groups of a model and build its cost model."""
    layout = find_groups(model)
    cost = build_cost_model(model, layout)
    return Analysis(**{f.name: getattr(layout, f.name) for f in fields(ChannelLayout)}, model=model, cost=cost)
