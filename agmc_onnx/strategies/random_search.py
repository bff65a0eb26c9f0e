"""`random`: best of N random plans, each drawn through the same action wall as the agents."""

from __future__ import annotations

from agmc_onnx.rl.runner import SearchStrategy


class RandomSearch(SearchStrategy):
    """Uniform keep ratios in [a_min, 1] per group, clipped to the MACs target; the best-scoring plan wins."""

    name = "random"
