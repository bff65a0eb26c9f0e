"""The input size a run analyses at: one fixed size per graph input, resolved once (--input-shape > the
exporter's metadata > the file's own static dims), the batch axis left symbolic where the file has it so.

Files from other toolchains declare dynamic sizes (Ultralytics `dynamic=True`: [batch, 3, height, width];
Paddle2ONNX: [-1, 3, '?', '?']). Shapes, rules, costs and benchmark feeds need numbers, so a run fixes one
analysis size per input here; the written file keeps the original's symbolic dims.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from agmc_onnx.errors import InputError

InputDim = int | str  # a fixed size, or the name of a symbolic batch axis
FLAG = "--input-shape"


def declared_inputs(proto: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """The real graph inputs (initializers listed as inputs are weights) and their declared dims: ints,
    symbol names, or None; a dim_value <= 0 (Paddle writes -1 for the batch) is symbolic."""
    inits = {t.name for t in proto.graph.initializer}
    out: dict[str, list[int | str | None]] = {}
    for vi in proto.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims: list[int | str | None] = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[vi.name] = dims
    return out


def _show(dims: Sequence[Any]) -> str:
    """[batch, 3, 640, 640]-style text of a shape (unknown dims as '?')."""
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def batch_symbol(name: str, dims: Sequence[Any]) -> str:
    """The name the analysis gives a symbolic batch axis (the file's own, else '<input>_batch')."""
    return dims[0] if dims and isinstance(dims[0], str) and dims[0] != "?" else f"{name}_batch"


@dataclass(frozen=True)
class InputShapes:
    """Per real graph input, the dims the run analyses at: ints, and the batch (axis 0) as a symbol name
    where the file leaves it symbolic. `source` says where the sizes came from; `note` is what to tell
    the user when they came from somewhere they did not write (the exporter's metadata)."""

    dims: dict[str, tuple[InputDim, ...]]
    source: str = "file"  # "file" | "--input-shape" | "metadata"
    note: str | None = None
    dynamic: tuple[str, ...] = field(default=())  # inputs whose non-batch dims the file leaves symbolic

    def fixed(self, batch: int = 1) -> dict[str, list[int]]:
        """Every input's dims with a symbolic batch set to `batch` (a fixed batch stays what the file says)."""
        return {n: [batch if isinstance(d, str) else int(d) for d in dims] for n, dims in self.dims.items()}

    def to_json(self) -> dict[str, Any]:
        """What a report records."""
        return {"dims": {n: list(d) for n, d in self.dims.items()}, "source": self.source,
                "dynamic": list(self.dynamic)}  # fmt: skip

    def describe(self) -> str:
        """'images [batch, 3, 640, 640]' for every input."""
        return ", ".join(f"{n} {_show(d)}" for n, d in self.dims.items())


def parse_input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """'NAME:1,3,640,640' (or '1,3,640,640' for a model with one input) -> (NAME or None, dims)."""
    name, sep, rest = text.rpartition(":")
    spec = rest if sep else text
    try:
        dims = tuple(int(v) for v in spec.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"{FLAG} {text!r}: expected NAME:D0,D1,... with positive integers, e.g. images:1,3,640,640") from None
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"{FLAG} {text!r}: expected NAME:D0,D1,... with positive integers, e.g. images:1,3,640,640")
    return (name or None) if sep else None, dims


def parse_input_shapes(texts: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    """Every --input-shape value by input name ('' for an unnamed one); None when none was given."""
    if not texts:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, dims = parse_input_shape(text)
        key = name or ""
        if key in out:
            raise InputError(f"{FLAG} given twice for {'the input' if not key else repr(key)}")
        out[key] = dims
    return out


def _metadata_size(proto: onnx.ModelProto, name: str, dims: list[Any]) -> tuple[list[Any], str] | None:
    """The input size an exporter recorded in metadata_props: Ultralytics writes imgsz '[640, 640]' and
    channels '3'; None when the file records none that fits this input."""
    meta = {p.key: p.value for p in proto.metadata_props}
    if "imgsz" not in meta or len(dims) != 4:
        return None
    try:
        size = ast.literal_eval(meta["imgsz"])
        hw = [int(size), int(size)] if isinstance(size, (int, float)) else [int(v) for v in size]
        channels = int(meta["channels"]) if "channels" in meta else dims[1]
    except (ValueError, SyntaxError, TypeError):
        return None
    if len(hw) != 2 or min(hw) < 1 or not isinstance(channels, int) or channels < 1:
        return None
    got = [dims[0], channels, *hw]
    return got, f"imgsz {meta['imgsz']}" + (f", channels {meta['channels']}" if "channels" in meta else "")


def resolve_input_shapes(proto: onnx.ModelProto, given: Mapping[str, Sequence[int]] | None = None,
                         path: Any = None) -> InputShapes:  # fmt: skip
    """The analysis size of every real input: `given` (--input-shape, by name; '' for the only input) >
    the exporter's metadata (Ultralytics imgsz + channels) > the file's static dims. An input whose size
    is still unknown past the batch axis is refused with one line naming it, its shape and the flag."""
    declared = declared_inputs(proto)
    given = dict(given or {})
    if "" in given:
        if len(declared) != 1:
            raise InputError(f"{FLAG} without a name needs a model with one input; this one has "
                             f"{', '.join(declared) or 'none'}: write NAME:D0,D1,...", path)  # fmt: skip
        given[next(iter(declared))] = given.pop("")
    unknown = [n for n in given if n not in declared]
    if unknown:
        raise InputError(f"{FLAG} names {unknown[0]!r}, which is not an input of the model (inputs: "
                         f"{', '.join(declared) or 'none'})", path)  # fmt: skip
    dims_out: dict[str, tuple[InputDim, ...]] = {}
    dynamic: list[str] = []
    sources: set[str] = set()
    notes: list[str] = []
    for name, dims in declared.items():
        if any(d is None or isinstance(d, str) for d in dims[1:]):
            dynamic.append(name)
        batch = batch_symbol(name, dims)
        if name in given:
            want = list(given[name])
            if len(want) != len(dims):
                raise InputError(f"{FLAG} {name}:{','.join(map(str, want))} has rank {len(want)}; input {name!r} "
                                 f"has shape {_show(dims)} (rank {len(dims)})", path)  # fmt: skip
            for k, (d, w) in enumerate(zip(dims, want, strict=True)):
                if isinstance(d, int) and d != w:
                    raise InputError(f"{FLAG} {name}:{','.join(map(str, want))} sets axis {k} to {w}, but input "
                                     f"{name!r} has shape {_show(dims)}: that axis is fixed at {d}", path)  # fmt: skip
            dims_out[name] = tuple([batch if not isinstance(dims[0], int) else dims[0], *want[1:]] if dims else [])
            sources.add(FLAG)
            continue
        if all(isinstance(d, int) for d in dims[1:]):
            dims_out[name] = tuple([batch if not isinstance(dims[0], int) else dims[0], *dims[1:]] if dims else [])
            continue
        meta = _metadata_size(proto, name, dims) if len(declared) == 1 else None
        if meta is not None and all(not isinstance(d, int) or d == m for d, m in zip(dims[1:], meta[0][1:], strict=True)):
            full = [batch if not isinstance(dims[0], int) else dims[0], *meta[0][1:]]
            dims_out[name] = tuple(full)
            sources.add("metadata")
            notes.append(f"input size from the file's metadata ({meta[1]}): {name} {_show(full)}; "
                         f"another size with {FLAG} {name}:1,{','.join(map(str, full[1:-2]))},H,W")  # fmt: skip
            continue
        letters = {2: "H", 3: "W"} if len(dims) == 4 else {}
        example = ",".join(str(d) if isinstance(d, int) else ("1" if k == 0 else letters.get(k, f"D{k}"))
                           for k, d in enumerate(dims))  # fmt: skip
        raise InputError(f"input {name!r} has shape {_show(dims)}: give its size with "
                         f"{FLAG} {name}:{example}", path)  # fmt: skip
    source = "metadata" if "metadata" in sources else (FLAG if FLAG in sources else "file")
    return InputShapes(dims_out, source, "; ".join(notes) or None, tuple(dynamic))


def as_input_shapes(proto: onnx.ModelProto, given: InputShapes | Mapping[str, Sequence[int]] | None,
                    path: Any = None) -> InputShapes:  # fmt: skip
    """`given` when it is already an InputShapes, else resolved against `proto` (resolve_input_shapes)."""
    if isinstance(given, InputShapes):
        return given
    return resolve_input_shapes(proto, given, path)


def with_input_dims(proto: onnx.ModelProto, dims: Mapping[str, Sequence[InputDim]]) -> onnx.ModelProto:
    """A copy whose graph inputs declare `dims` (ints fixed, strings symbolic), initializers dropped from
    the inputs, every value_info and the outputs' shapes cleared: ready for shape inference at that size."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {t.name for t in out.graph.initializer}
    keep = [vi for vi in out.graph.input if vi.name not in inits]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    del out.graph.value_info[:]
    for vi in out.graph.input:
        if vi.name not in dims or not vi.type.HasField("tensor_type"):
            continue
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims[vi.name]:
            entry = shape.dim.add()
            if isinstance(d, str):
                entry.dim_param = d
            else:
                entry.dim_value = int(d)
    for vi in out.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    return out
