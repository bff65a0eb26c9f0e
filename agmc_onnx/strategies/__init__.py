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


def _search(name: str) -> Callable[[], Strategy]:
    """Factory for a search strategy, imported on first use (torch and PyG load only then)."""

    def make() -> Strategy:
        from agmc_onnx.strategies.agmc import AGMC
        from agmc_onnx.strategies.amc import AMC
        from agmc_onnx.strategies.random_search import RandomSearch

        return {"agmc": AGMC, "amc": AMC, "random": RandomSearch}[name]()

    return make


REGISTRY.update({"agmc": _search("agmc"), "amc": _search("amc"), "random": _search("random")})
SEARCH_STRATEGIES = ("agmc", "amc", "random")


def register(name: str, factory: Callable[[], Strategy]) -> None:
    """Add a strategy (random, amc, agmc live in other packages and register themselves)."""
    REGISTRY[name] = factory


__all__ = ["REGISTRY", "SEARCH_STRATEGIES", "Budget", "MacsSolver", "Strategy", "StrategyContext", "check_target", "register"]
