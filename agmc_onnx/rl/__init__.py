"""Reinforcement learning for the search: environment with the action wall, DDPG agent, search loop."""

from agmc_onnx.rl.ddpg import DDPG, DDPGConfig, ReplayBuffer
from agmc_onnx.rl.env import PruningEnv, allowed_counts

__all__ = ["DDPG", "DDPGConfig", "PruningEnv", "ReplayBuffer", "allowed_counts"]
