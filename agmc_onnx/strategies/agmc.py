"""`agmc`: a staged GNN encodes the ONNX graph, a DDPG agent decodes it into per-group keep ratios."""

from __future__ import annotations

from agmc_onnx.rl.runner import SearchStrategy


class AGMC(SearchStrategy):
    """AGMC (Yu et al., ICCV 2021): state = [graph embedding, group embedding, MACs, previous action]."""

    name = "agmc"
