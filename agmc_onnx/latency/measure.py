"""Timing one-layer models in ONNX Runtime: runners, inputs, interleaved medians minus per-run overhead."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from agmc_onnx.latency.layers import LayerSpec, null_model

Timer = Callable[[], float]
# (model, feeds) -> a zero-argument callable that runs it once
RunnerFactory = Callable[[onnx.ModelProto, dict[str, np.ndarray]], Callable[[], Any]]


def machine_id() -> str:
    """The CPU model string, architecture and core count (what a table's timings belong to)."""
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} | {platform.machine()} | {os.cpu_count()} cpus"


def ort_runner_factory(provider: str = "cpu", threads: int | None = None) -> RunnerFactory:
    """Runners that execute a model in an ORT session (graph optimisations on, as in deployment)."""
    from agmc_onnx.bench import _session

    def make(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        sess = _session(proto, provider, threads)
        return lambda: sess.run(None, feeds)

    return make


def random_feeds(proto: onnx.ModelProto, batch: int, input_shapes: Any = None) -> dict[str, np.ndarray]:
    """Random inputs for a model at `batch`."""
    from agmc_onnx.bench import make_inputs

    return make_inputs(proto, batch, input_shapes=input_shapes)


CHUNK_BYTES = 512 * 2**20  # activations + weights of the one-layer sessions held open together


def measure_points(points: list[tuple[LayerSpec, int, int]], batch: int, factory: RunnerFactory, timer: Timer,
                   warmup: int, repeats: int, progress: Callable[[str], None] | None,
                   ) -> dict[tuple[str, int, int], float]:  # fmt: skip
    """Median ms of every (layer config, kept in, kept out) one-layer model, minus the per-run overhead.

    Points are measured interleaved in as few chunks as CHUNK_BYTES allows (usually one), not one
    layer at a time: measured one layer at a time, a layer shared by 9 ResNet-56 convs came out 14%
    apart in two builds (the machine's load moved between layers), an error every plan inherits.
    Every chunk also times the same reference layer, and each chunk's medians are scaled by the
    reference's median over all chunks / its median in that chunk, so drift between chunks cancels.
    """
    from agmc_onnx.bench import measure

    null = null_model()
    null_run = factory(null, random_feeds(null, 1))
    chunks: list[list[tuple[tuple[str, int, int], onnx.ModelProto]]] = [[]]
    used = 0
    for spec, ci, co in points:
        proto = spec.build(ci, co, batch)
        size = _session_bytes(proto)
        if chunks[-1] and used + size > CHUNK_BYTES:
            chunks.append([])
            used = 0
        chunks[-1].append(((spec.config, ci, co), proto))
        used += size
    ref_proto = chunks[0][0][1]
    ref_run = factory(ref_proto, random_feeds(ref_proto, batch))
    raw: list[tuple[float, dict[tuple[str, int, int], float]]] = []
    for k, chunk in enumerate(chunks):
        if progress:
            progress(f"layer tables: {len(points)} one-layer models, chunk {k + 1}/{len(chunks)}")
        runners = [null_run, ref_run] + [factory(proto, random_feeds(proto, batch)) for _, proto in chunk]
        meds = [float(np.median(s)) for s in measure(runners, warmup, repeats, timer)]
        ref = max(1e-9, meds[1] - meds[0])
        raw.append((ref, {key: max(0.0, m - meds[0]) for (key, _), m in zip(chunk, meds[2:], strict=True)}))
    ref_all = float(np.median([r for r, _ in raw]))
    return {key: v * ref_all / r for r, vals in raw for key, v in vals.items()}


def _session_bytes(proto: onnx.ModelProto) -> int:
    """Rough memory of a one-layer session: weights, plus the input and (at most twice) its size as output."""
    weights = sum(4 * int(np.prod(t.dims)) for t in proto.graph.initializer)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    return weights + 3 * 4 * int(np.prod(dims))
