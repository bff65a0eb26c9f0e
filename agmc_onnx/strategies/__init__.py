"""Channel-selection strategies behind one interface; search strategies register here too."""

from __future__ import annotations

from collections.abc import Callable

from agmc_onnx.strategies.base import Budget, MacsSolver, Strategy, StrategyContext, check_target
from agmc_onnx.strategies.l1_global import L1Global
from agmc_onnx.strategies.plan_file import PlanFile
from agmc_onnx.strategies.uniform import Uniform

REGISTRY: dict[str, Callable[[], Strategy]] = {
    "uniform": Uniform,
    "l1-global": L1Global,
    "plan": PlanFile,
}


def register(name: str, factory: Callable[[], Strategy]) -> None:
    """Add a strategy (random, amc, agmc live in other packages and register themselves)."""
    REGISTRY[name] = factory


__all__ = ["REGISTRY", "Budget", "MacsSolver", "Strategy", "StrategyContext", "check_target", "register"]
