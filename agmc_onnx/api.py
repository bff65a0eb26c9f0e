"""The public Python API on ONNX files: load, analyse, prune, search, fine-tune (agmc_onnx.workflows does the work).

    >>> from agmc_onnx import api
    >>> analysis = api.analyze("model.onnx")
    >>> result = api.prune_model("model.onnx", 0.5, "l1-global", output="model.pruned.onnx")
    >>> run = api.search_prune("model.onnx", 0.5, "agmc", data="fixtures/data", output="m.pruned.onnx")
    >>> run = api.search_prune("yolo.onnx", 0.5, data="frames/", reward="fidelity",
    ...                        output_weights={"output0": 1.0}, output="yolo.pruned.onnx")
"""

from __future__ import annotations

import os
from typing import Any

from agmc_onnx.analysis import Analysis
from agmc_onnx.analysis import analyze as _analyze
from agmc_onnx.evaluate import evaluate_onnx, fidelity_onnx, reference_fidelity
from agmc_onnx.fidelity import Fidelity
from agmc_onnx.model import ModelGraph
from agmc_onnx.model import load as _load
from agmc_onnx.workflows.audit import build_report, default_output, group_macs_share, summarize
from agmc_onnx.workflows.context import RunContext, SearchData, build_context
from agmc_onnx.workflows.engine import PruneResult, prune_model
from agmc_onnx.workflows.finetune import FinetuneRun, run_finetune
from agmc_onnx.workflows.prune import PruneOptions, PruneRun, run_prune
from agmc_onnx.workflows.search import SearchPruneResult, load_search_data, search_defaults, search_prune
from agmc_onnx.workflows.validate import validate_bench, validate_finetune, validate_inspect, validate_prune

PathLike = str | os.PathLike[str]


def load(path: PathLike, input_shapes: Any = None) -> ModelGraph:
    """Read, check and normalise an ONNX file (analysed at `input_shapes`: {input: dims}, for dynamic sizes)."""
    return _load(path, input_shapes=input_shapes)


def analyze(model: ModelGraph | PathLike, input_shapes: Any = None) -> Analysis:
    """Channel groups and cost model of a model (a ModelGraph or a path, loaded at `input_shapes`)."""
    return _analyze(model if isinstance(model, ModelGraph) else _load(model, input_shapes=input_shapes))


prune = prune_model

__all__ = [
    "Analysis", "Fidelity", "FinetuneRun", "evaluate_onnx", "fidelity_onnx", "reference_fidelity", "ModelGraph", "PruneOptions", "PruneResult", "PruneRun", "RunContext", "SearchData",
    "SearchPruneResult", "analyze", "build_context", "build_report", "default_output", "group_macs_share", "load",
    "load_search_data", "prune", "prune_model", "run_finetune", "run_prune", "search_defaults", "search_prune",
    "summarize", "validate_bench", "validate_finetune", "validate_inspect", "validate_prune",
]  # fmt: skip
