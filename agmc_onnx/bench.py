"""Latency in ONNX Runtime: interleaved timing of one or several models, and a per-node profile."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from agmc_onnx import runtime
from agmc_onnx.errors import InputError
from agmc_onnx.modelfile import read_model_file

ModelRef = str | Path | onnx.ModelProto | bytes
Timer = Callable[[], float]


@dataclass
class Stats:
    """Summary of one model's latency samples at one batch size, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    samples: int

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        """Median, p90 (linear interpolation), mean, min and max of the samples."""
        if not samples_ms:
            raise ValueError("no latency samples")
        arr = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            median_ms=float(np.median(arr)),
            p90_ms=float(np.percentile(arr, 90)),
            mean_ms=float(arr.mean()),
            min_ms=float(arr.min()),
            max_ms=float(arr.max()),
            samples=len(arr),
        )


@dataclass
class ModelTiming:
    """One model at one batch size: its stats and the raw samples."""

    model: str
    batch: int
    stats: Stats
    samples_ms: list[float] = field(repr=False, default_factory=list)


@dataclass
class BenchResult:
    """Latencies of several models measured together; the first model is the baseline."""

    models: list[str]
    batches: list[int]
    provider: str
    threads: int | None
    warmup: int
    repeats: int
    timings: list[ModelTiming]
    sessions: int = 1  # ORT sessions per model; each model's figures are its fastest session's

    def timing(self, model: int | str, batch: int) -> ModelTiming:
        """The timing of model (index or label) at `batch`."""
        label = self.models[model] if isinstance(model, int) else model
        for t in self.timings:
            if t.model == label and t.batch == batch:
                return t
        raise KeyError((label, batch))

    def speedup(self, model: int | str, batch: int, baseline: int | str = 0) -> float:
        """Median latency of the baseline divided by that of `model` (>1: model is faster)."""
        return self.timing(baseline, batch).stats.median_ms / self.timing(model, batch).stats.median_ms

    def to_json(self, samples: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: settings, per model and batch the stats, speed-ups vs the first model."""
        rows = []
        for t in self.timings:
            row: dict[str, Any] = {"model": t.model, "batch": t.batch, **asdict(t.stats)}
            row["speedup"] = self.speedup(t.model, t.batch)
            if samples:
                row["samples_ms"] = list(t.samples_ms)
            rows.append(row)
        return {
            "provider": self.provider,
            "threads": self.threads,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "sessions": self.sessions,
            "batches": list(self.batches),
            "models": list(self.models),
            "baseline": self.models[0],
            "results": rows,
        }


def measure(
    runners: Sequence[Callable[[], Any]],
    warmup: int = 5,
    repeats: int = 30,
    timer: Timer = time.perf_counter,
) -> list[list[float]]:
    """Time each runner `repeats` times, interleaved round by round; returns milliseconds per runner.

    Every runner is warmed up `warmup` times first. Round r starts at runner r mod n, so no runner
    always runs first (or right after a particular other one) while the machine's load drifts.
    """
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    n = len(runners)
    for _ in range(max(0, warmup)):
        for run in runners:
            run()
    samples: list[list[float]] = [[] for _ in range(n)]
    for r in range(repeats):
        for k in range(n):
            i = (r + k) % n
            start = timer()
            runners[i]()
            samples[i].append((timer() - start) * 1000.0)
    return samples


SESSIONS = 3  # ORT sessions per model in whole-model timings (see measure_sessions)


def measure_sessions(
    runners: Sequence[Sequence[Callable[[], Any]]],
    warmup: int = 5,
    repeats: int = 30,
    timer: Timer = time.perf_counter,
) -> list[list[float]]:
    """Time several sessions of each model, all interleaved; per model, the samples of its fastest session.

    Measured on the 2-core development machine (ORT 1.x CPU, 1 intra-op thread): a session of the
    trained ResNet-56 fixture run back to back is sometimes 3x slower for its whole life (6 ms
    instead of 2 ms, 8 of 24 fresh sessions), while other sessions of the same file are not; one
    session per model made that a coin toss in speed-ups and in the latency model's calibration,
    and with two sessions both were once slow.
    The fastest of `SESSIONS` sessions (by median) is what the model can run at.
    """
    if any(not group for group in runners):
        raise InputError("every model needs at least one session to time")
    samples = measure([run for group in runners for run in group], warmup, repeats, timer)
    out, start = [], 0
    for group in runners:
        out.append(min(samples[start:start + len(group)], key=lambda x: float(np.median(x))))
        start += len(group)
    return out


def make_inputs(model: onnx.ModelProto, batch: int, seed: int = 0, input_shapes: Any = None) -> dict[str, np.ndarray]:
    """Random inputs for every real graph input (never an initializer listed as an input), at `input_shapes`
    (an InputShapes, or --input-shape values by input name; default: the file's static dims or its
    exporter's metadata, else an InputError naming the input and the flag), axis 0 set to `batch`."""
    from agmc_onnx.inputs import InputShapes, declared_inputs, resolve_input_shapes

    real = declared_inputs(model)
    if isinstance(input_shapes, InputShapes) and set(input_shapes.dims) == set(real):
        sizes = input_shapes
    else:
        given = input_shapes.fixed(1) if isinstance(input_shapes, InputShapes) else input_shapes
        sizes = resolve_input_shapes(model, given)
    elems = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, dims in sizes.fixed(batch).items():
        if dims:
            dims[0] = batch
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elems[name])
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[name] = np.zeros(dims, dtype=dtype)
    return feeds


def _proto(model: ModelRef) -> onnx.ModelProto:
    """Load a model (path, bytes or proto) as a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return read_model_file(model)  # the one reader: the tool's messages for empty, corrupt, external data...


def _label(model: ModelRef, index: int) -> str:
    """A display name: the file name for paths, model<i> otherwise."""
    return Path(model).name if isinstance(model, (str, Path)) else f"model{index}"


def _session(
    model: onnx.ModelProto, provider: str, threads: int | None, profile_prefix: str | None = None
) -> Any:
    """An ORT session for benchmarking, optionally with profiling on."""
    rt = runtime.ort()
    opts = rt.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return rt.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=runtime.providers(provider)
    )


def _unique(labels: list[str]) -> list[str]:
    """Make labels unique by suffixing repeats with #2, #3, ..."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def bench(
    models: Sequence[ModelRef],
    batches: Sequence[int] = (1,),
    provider: str = "cpu",
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 30,
    labels: Sequence[str] | None = None,
    timer: Timer = time.perf_counter,
    sessions: int = SESSIONS,
    input_shapes: Any = None,
) -> BenchResult:
    """Time every model at every batch size in ORT, interleaved; the first model is the baseline.

    Each model runs in `sessions` ORT sessions; its figures are those of its fastest (measure_sessions).
    `input_shapes`: the size to feed files with dynamic input sizes (make_inputs).
    """
    if not models:
        raise InputError("bench needs at least one model")
    if any(b < 1 for b in batches):
        raise InputError(f"batch sizes must be positive, got {list(batches)}")
    protos = [_proto(m) for m in models]
    names = _unique(list(labels) if labels else [_label(m, i) for i, m in enumerate(models)])
    if sessions < 1:
        raise InputError(f"sessions must be at least 1, got {sessions}")
    opened = [[_session(p, provider, threads) for _ in range(sessions)] for p in protos]
    timings = []
    for batch in batches:
        runners = []
        for proto, group, name in zip(protos, opened, names, strict=True):
            try:
                feeds = make_inputs(proto, batch, input_shapes=input_shapes)
            except InputError as exc:
                raise InputError(str(exc), name) if exc.path is None else exc from None
            runners.append([lambda sess=sess, feeds=feeds: sess.run(None, feeds) for sess in group])
        for name, samples in zip(names, measure_sessions(runners, warmup, repeats, timer), strict=True):
            timings.append(ModelTiming(name, batch, Stats.of(samples), samples))
    return BenchResult(names, list(batches), provider, threads, warmup, repeats, timings, sessions)


@dataclass
class NodeCost:
    """One node's share of a profiled run."""

    node: str
    op: str
    mean_us: float
    share: float


def parse_profile(
    events: Sequence[Mapping[str, Any]], runs: int, names: Mapping[str, str] | None = None
) -> list[NodeCost]:
    """Per-node mean kernel time (us per run) from ORT profile events, most costly first.

    ORT names rewritten nodes after their output (`<tensor>_nchwc`) and fused ones `fused <node>`;
    `names` maps output tensors back to the original node names.
    """
    names = names or {}
    total: dict[str, float] = {}
    ops: dict[str, str] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        base = name.removeprefix("fused ").removesuffix("_nchwc")
        name = names.get(base, base)
        total[name] = total.get(name, 0.0) + float(ev.get("dur", 0))
        ops[name] = str(ev.get("args", {}).get("op_name", "?"))
    whole = sum(total.values()) or 1.0
    costs = [NodeCost(n, ops[n], t / max(1, runs), t / whole) for n, t in total.items()]
    return sorted(costs, key=lambda c: c.mean_us, reverse=True)


def profile(
    model: ModelRef, batch: int = 1, provider: str = "cpu", threads: int | None = None, runs: int = 10,
    input_shapes: Any = None,
) -> list[NodeCost]:
    """Profile `runs` inferences with ORT's profiler and return the per-node costs."""
    proto = _proto(model)
    feeds = make_inputs(proto, batch, input_shapes=input_shapes)
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(proto, provider, threads, profile_prefix=os.path.join(tmp, "agmc"))
        sess.run(None, feeds)  # warm-up, counted out below
        for _ in range(runs):
            sess.run(None, feeds)
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    outputs = {out: node.name or out for node in proto.graph.node for out in node.output}
    return parse_profile(events, runs + 1, outputs)


def speedup_shortfall(speedup: float, macs_ratio: float, tolerance: float = 0.75) -> bool:
    """True when the measured speed-up is well short of what the MACs reduction promises.

    `macs_ratio` is pruned MACs / original MACs; the ideal speed-up is its inverse. A shortfall is a
    speed-up below `tolerance` x the ideal one (and in any case one below 1, i.e. a slower model).
    """
    if macs_ratio <= 0:
        return False
    ideal = 1.0 / macs_ratio
    return speedup < max(1.0, tolerance * ideal) if ideal > 1.0 else speedup < 1.0


def format_table(result: BenchResult) -> list[list[str]]:
    """Rows (header first) of a side-by-side table: model, batch, median, p90, speed-up."""
    rows = [["model", "batch", "median ms", "p90 ms", "speed-up"]]
    for t in result.timings:
        rows.append(
            [
                t.model,
                str(t.batch),
                f"{t.stats.median_ms:.3f}",
                f"{t.stats.p90_ms:.3f}",
                f"{result.speedup(t.model, t.batch):.2f}x",
            ]
        )
    return rows
