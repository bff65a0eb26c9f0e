"""What a run decides once and passes down: the model, its preprocessing, the data splits, device and seed.

Preprocessing is resolved here, once per run (flags > sidecar > the model file's metadata > Ultralytics'
export metadata > the model's input shape), and every stage that reads data (reward split, BN calibration,
fine-tuning, the final evaluation) takes it from here: no stage builds its own. Data may have no labels
(a flat image folder, input tensors): then, when it has no test split either, a seeded slice of it is
held out for the final figures (fidelity to the original) and never searched or trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.data import (
    METADATA_KEY,
    ULTRALYTICS_SOURCE,
    Dataset,
    Preprocess,
    find_sidecar,
    load_dataset,
    model_inputs,
    reward_split,
    sidecar_path,
)
from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.inputs import InputShapes
from agmc_onnx.model import ModelGraph
from agmc_onnx.model import load as load_model
from agmc_onnx.modelfile import output_classes

PathLike = str | os.PathLike[str]
SELF_CHECK_POINTS = 0.1  # a written file's accuracy must equal the report's within this many points
LOW_ACCURACY = 0.5  # below this on labelled data, the original's preprocessing is suspect (documented rule)
SELF_CHECK_FIDELITY = 1e-3  # a written file's fidelity must equal the report's within this
HELD_OUT_IMAGES = 500  # unlabelled data without a test split: at most this many (a fifth) held out for the report


@dataclass
class SearchData:
    """The three data roles of a search: reward split (scores), calibration images (BN), test split (report)."""

    reward: Any
    calibration: Any
    test: Any | None = None


@dataclass
class RunContext:
    """One run's model, preprocessing and data, built once (build_context) and passed to every stage."""

    path: Path
    model: ModelGraph
    preprocess: Preprocess | None = None  # None: the run reads no data
    train: Dataset | None = None
    test: Dataset | None = None
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    notes: list[str] = field(default_factory=list)  # what the run decided for the user (printed, reported)
    _splits: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    @property
    def labelled(self) -> bool:
        """Whether the run's training data has labels."""
        return self.train is not None and self.train.labelled

    def default_reward(self) -> str:
        """accuracy on labelled data, fidelity to the original's outputs without labels."""
        return "accuracy" if self.labelled else "fidelity"

    @property
    def input_shapes(self) -> InputShapes:
        """The input size the run analyses, counts and benchmarks at (resolved once, when the model loaded)."""
        assert self.model.input_shapes is not None
        return self.model.input_shapes

    def search_data(self, reward_images: int) -> SearchData:
        """A seeded class-balanced reward split of TRAIN, the rest as BN calibration images, and TEST."""
        if self.train is None:
            raise InputError("this run scores candidates on data: give --data DIR", self.path)
        key = ("search", reward_images)
        if key not in self._splits:
            split = reward_split(self.train, min(reward_images, len(self.train) // 2), self.seed)
            self._splits[key] = SearchData(split.reward, split.rest, self.test)
        return self._splits[key]

    def describe(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """Record the run's preprocessing in a model's metadata (in place): every command reads it back."""
        return record_preprocess(proto, self.preprocess)

    def write_sidecar(self, output: PathLike) -> Path | None:
        """A preprocessing sidecar beside `output` when the input model had one (so both travel the same way)."""
        if self.preprocess is None or find_sidecar(self.path) is None:
            return None
        from agmc_onnx.io import write_json

        return write_json(self.preprocess.to_json(), sidecar_path(output), self.path)

    def low_accuracy_warning(self, accuracy: float, split: str) -> str | None:
        """A warning when the ORIGINAL model scores below LOW_ACCURACY on labelled data: wrong preprocessing?"""
        return low_accuracy_warning(accuracy, split, self.preprocess, self.path)

    def finetune_data(self, held_out: int | None = None) -> tuple[Dataset, Dataset]:
        """(training examples, held-out slice of TRAIN that picks the best epoch: a fifth, at most 5000)."""
        if self.train is None:
            raise InputError("fine-tuning trains on data: give --data DIR", self.path)
        n = held_out if held_out is not None else min(5000, max(1, len(self.train) // 5))
        key = ("finetune", n)
        if key not in self._splits:
            split = reward_split(self.train, n, self.seed)
            self._splits[key] = (split.rest, split.reward)
        return self._splits[key]


def record_preprocess(proto: onnx.ModelProto, pre: Preprocess | None) -> onnx.ModelProto:
    """Write `pre` into the model's metadata_props (METADATA_KEY, in place); nothing when None."""
    if pre is not None:
        props = [p for p in proto.metadata_props if p.key != METADATA_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(props)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(pre.to_json())
    return proto


def own_preprocess(model: ModelGraph) -> Preprocess | None:
    """A model's own preprocessing (sidecar > metadata > input shape), None when it is no image model."""
    try:
        return resolve_preprocess(model)
    except InputError:
        return None


def data_preprocess(model: ModelGraph) -> Preprocess | None:
    """The preprocessing of a run that reads data: the model's own (errors raised), None when its input is no image."""
    first = next(iter(model_inputs(model.proto)), None)
    if first is not None and len(first.shape) != 4:
        return None
    return resolve_preprocess(model)


def low_accuracy_warning(accuracy: float, split: str, pre: Preprocess | None, model: PathLike | None) -> str | None:
    """The warning for an ORIGINAL model scoring below LOW_ACCURACY on labelled data (None when it does not):
    near chance is what a wrong preprocessing looks like, so the message says what was used and where it came from."""
    if accuracy >= LOW_ACCURACY:
        return None
    used = "" if pre is None else (f" (used {pre.source or 'defaults from the input shape'}: scale "
                                   f"{'1/255 for 8-bit images' if pre.scale is None else pre.scale}, mean "
                                   f"{list(pre.mean)}, std {list(pre.std)}, layout {pre.layout})")  # fmt: skip
    looked = f"; looked for the sidecar {sidecar_path(model)}" if model is not None else ""
    return (f"the original model scores only {100 * accuracy:.1f}% on the {split}: the preprocessing may be wrong"
            f"{used}{looked}; set it with --scale / --mean / --std / --layout / --resize or a sidecar")


def resolve_preprocess(model: ModelGraph | PathLike, sidecar: PathLike | None = None,
                       **flags: Any) -> Preprocess:  # fmt: skip
    """The run's preprocessing: flags > sidecar (given, or beside the model) > the file's metadata > its input shape."""
    return Preprocess.for_model(model, sidecar, **flags)


def sized_by_input_shape(pre: Preprocess | None, graph: ModelGraph, notes: list[str]) -> Preprocess | None:
    """Images go to the size `--input-shape` gives a dynamic-size image input (over an exporter's `imgsz`, a
    sidecar's or a recorded size): the run analyses, searches and trains at one size, the one the user asked."""
    shapes = graph.input_shapes
    if pre is None or shapes is None or shapes.source != "--input-shape":
        return pre
    name = next(iter(shapes.dims), None)
    dims = shapes.dims.get(name) if name is not None else None
    if name not in shapes.dynamic or dims is None or len(dims) != 4:
        return pre
    size = (int(dims[1]), int(dims[2])) if pre.layout == "NHWC" else (int(dims[2]), int(dims[3]))
    if pre.size != size:
        was = "their own size" if pre.size is None else f"{pre.size[0]}x{pre.size[1]}"
        notes.append(f"images go to {size[0]}x{size[1]} ({pre.resize}), the --input-shape of {name!r}, not {was}")
        pre = replace(pre, size=size)
    return pre


def build_context(
    model: PathLike | ModelGraph,
    data: PathLike | None = None,
    *,
    need_test: bool = False,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    preprocess: Preprocess | None = None,
    sidecar: PathLike | None = None,
    flags: dict[str, Any] | None = None,
    input_shapes: Any = None,
) -> RunContext:
    """Load the model (once) and, with `data`, resolve the preprocessing and load train (+ test) with it.

    Data without labels is accepted (flat image folders, .npy/.npz of images or input tensors); without a
    test split it gives a seeded held-out slice (HELD_OUT_IMAGES at most) for the final figures. A model
    whose input is no image (not 4-D) needs no preprocessing when given input tensors. The model is analysed
    at `input_shapes` (--input-shape values by input name; default the file's static dims or its exporter's
    metadata)."""
    graph = model if isinstance(model, ModelGraph) else load_model(model, input_shapes=input_shapes)
    path = Path(graph.path) if graph.path else Path(str(model)) if not isinstance(model, ModelGraph) else Path("model")
    ctx = RunContext(path=path, model=graph, seed=seed, device=device, threads=threads)
    given = preprocess is not None or sidecar is not None or any(v is not None for v in (flags or {}).values())
    if data is None:  # no data to read: the model's own preprocessing is still what its outputs record
        ctx.preprocess = preprocess or resolve_preprocess(graph, sidecar, **(flags or {})) if given else own_preprocess(graph)
        return ctx
    ctx.preprocess = preprocess or resolve_preprocess(graph, sidecar, **(flags or {})) if given else data_preprocess(graph)
    ctx.preprocess = sized_by_input_shape(ctx.preprocess, graph, ctx.notes)
    if ctx.preprocess is not None and ctx.preprocess.source == ULTRALYTICS_SOURCE:
        ctx.notes.append(f"preprocessing from the model's Ultralytics metadata: {ctx.preprocess.describe()}; "
                         "--resize / --scale / --mean / --std / --channel-order or a sidecar override it")
    inputs = model_inputs(graph.proto)
    pre = ctx.preprocess or Preprocess()
    classes = output_classes(graph.source or graph.proto)  # labels must be within the model's outputs
    ctx.train = load_dataset(data, "train", pre, labels=False, inputs=inputs, num_classes=classes)
    missing_test: InputError | None = None
    try:
        ctx.test = load_dataset(data, "test", pre, labels=False, inputs=inputs, num_classes=classes)
    except InputError as exc:
        if _loads(data, pre, inputs):
            raise  # the test split is there, but with labels the model does not have
        ctx.test, missing_test = None, exc
    check_inputs(ctx.train, inputs, ctx.preprocess, data)
    if ctx.test is None and not ctx.train.labelled:
        n = min(HELD_OUT_IMAGES, len(ctx.train) // 5)
        if n >= 1:
            split = reward_split(ctx.train, n, seed + 7919)  # another seed than the reward split's
            ctx.train, ctx.test = split.rest, split.reward
            ctx.notes.append(f"the data has no labels and no test split: {n} of its {n + len(ctx.train)} inputs are "
                             "held out for the final fidelity figures (never searched or trained on)")
    if ctx.test is None and need_test:
        assert missing_test is not None
        raise missing_test
    return ctx


def _loads(data: PathLike, pre: Preprocess, inputs: list[Any]) -> bool:
    """True when the test split of `data` loads at all (without the model's class bound)."""
    try:
        load_dataset(data, "test", pre, labels=False, inputs=inputs)
    except InputError:
        return False
    return True


def check_inputs(ds: Dataset, inputs: list[Any], pre: Preprocess | None, data: PathLike) -> None:
    """The loaded arrays must fit the model's inputs (count, rank and every fixed dimension after the batch)."""
    if len(ds.inputs) != len(inputs):
        raise InputError(f"the data gives {len(ds.inputs)} input array(s), the model takes {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)})", data)
    for arr, info in zip(ds.inputs, inputs, strict=True):
        if arr.ndim != len(info.shape) or any(
                d is not None and d != a for d, a in zip(info.shape[1:], arr.shape[1:], strict=True)):  # fmt: skip
            want = "[" + ",".join("N" if i == 0 or d is None else str(d) for i, d in enumerate(info.shape)) + "]"
            why = "" if pre is not None else " (the model's input is no image: give input tensors in an .npy/.npz)"
            raise InputError(f"the data's {info.name!r} is {list(arr.shape)} but the model takes {want}{why}", data)


def self_check(path: Path, test: Dataset, reported: float | None, reference: Any = None,
               reported_fidelity: float | None = None, read_from: Path | None = None) -> None:  # fmt: skip
    """The written file (at `read_from` while a run's outputs are staged), read back and run in ONNX Runtime,
    must score what the report says (run failure else): its test accuracy when the data has labels, its
    fidelity to the original (`reference`, a Fidelity on `test`)."""
    from agmc_onnx.evaluate import evaluate_onnx, fidelity_onnx

    written = onnx.load(str(read_from or path))
    if reported is not None and test.labelled:
        got = evaluate_onnx(written, test)
        if abs(100 * (got - reported)) > SELF_CHECK_POINTS:
            raise AgmcError(f"the written model scores {100 * got:.2f}% on the test split, the report says "
                            f"{100 * reported:.2f}%: the run's own check failed, nothing kept", path)
    if reference is not None and reported_fidelity is not None:
        got = fidelity_onnx(written, test, reference)
        if abs(got - reported_fidelity) > SELF_CHECK_FIDELITY:
            raise AgmcError(f"the written model's fidelity to the original is {got:.4f} on the test split, the report "
                            f"says {reported_fidelity:.4f}: the run's own check failed, nothing kept", path)
