"""`amc`: the same DDPG search with AMC's hand-made layer features as the state."""

from __future__ import annotations

from agmc_onnx.rl.runner import SearchStrategy


class AMC(SearchStrategy):
    """AMC (He et al., ECCV 2018): state = [index, type, C_in, C_out, stride, kernel, size, MACs, previous action]."""

    name = "amc"
