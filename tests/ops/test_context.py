"""ops/ sits below groups and surgery: it imports neither, and both satisfy its Protocols structurally."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import onnx_graphsurgeon as gs
import pytest

import agmc_onnx.ops
from agmc_onnx.analysis import analyze
from agmc_onnx.groups import Propagator
from agmc_onnx.model import from_proto
from agmc_onnx.ops import Propagation, Rewrite, Surgery
from agmc_onnx.ops.layers import DepthwiseGroups
from agmc_onnx.ops.layout import GatherChannel, SliceChannel, SliceToGather, SplitSizes
from agmc_onnx.ops.reshape import ShapeChannel
from agmc_onnx.ops.unary import ResizeSizes
from agmc_onnx.plan import full_plan
from agmc_onnx.surgery import SurgeryContext
from tests.helpers_onnx import tiny_convnet

RECORDS = [DepthwiseGroups("x", 1), GatherChannel("x", (0,), "i"), SliceChannel("x", 0, 1, 0),
           SliceToGather("x", (0,), 1), SplitSizes("x", (1, 1)), ShapeChannel("y", "s", 1), ResizeSizes("x", "s")]


def test_ops_imports_nothing_above_it() -> None:
    """Every agmc_onnx import inside agmc_onnx/ops is of agmc_onnx.ops itself (no import circle)."""
    for path in Path(agmc_onnx.ops.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            for name in names:
                assert not name.startswith("agmc_onnx") or name.startswith("agmc_onnx.ops"), f"{path.name}: {name}"


def test_propagator_and_surgery_context_satisfy_the_protocols() -> None:
    """The driver and the surgery context offer every method the Protocols name."""
    model = from_proto(tiny_convnet())
    assert isinstance(Propagator(model), Propagation)
    a = analyze(model)
    assert isinstance(SurgeryContext(a, full_plan(a), gs.import_onnx(a.model.proto)), Surgery)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_rewrites_are_frozen_records(record: Rewrite) -> None:
    """Each rewrite is a frozen dataclass with an `apply` (hashable, comparable, not editable)."""
    assert isinstance(record, Rewrite) and dataclasses.is_dataclass(record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.tensor = "z"  # type: ignore[attr-defined,misc]
    assert hash(record) == hash(dataclasses.replace(record))
