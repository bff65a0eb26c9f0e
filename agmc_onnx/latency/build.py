"""Building a latency model: measure the layer tables and the fit, or load them from the cache.

Tables are cached as JSON keyed by a hash of the model, provider, threads, batch, rounding, grid
and machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agmc_onnx.errors import InputError
from agmc_onnx.latency.calibrate import calibrate
from agmc_onnx.latency.layers import layer_specs
from agmc_onnx.latency.measure import RunnerFactory, Timer, machine_id, measure_points, ort_runner_factory
from agmc_onnx.latency.tables import LatencyModel, LatencyTable, NodeTable

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.plan import RoundTo


def default_cache_dir() -> Path:
    """$AGMC_ONNX_CACHE/latency or ~/.cache/agmc-onnx/latency."""
    root = os.environ.get("AGMC_ONNX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agmc-onnx")
    return Path(root) / "latency"


def table_key(analysis: Analysis, settings: Mapping[str, Any]) -> str:
    """Hash of the model's bytes and every setting the timings depend on (machine included)."""
    h = hashlib.sha256()
    h.update(analysis.model.proto.SerializeToString(deterministic=True))
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _ort_version() -> str:
    """The installed onnxruntime version ('none' without it)."""
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover
        return "none"


def build_latency_model(
    analysis: Analysis,
    batch: int = 1,
    provider: str = "cpu",
    threads: int | None = None,
    round_to: RoundTo = 16,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    timer: Timer = time.perf_counter,
    runner_factory: RunnerFactory | None = None,
    machine: str | None = None,
    warmup: int = 3,
    repeats: int = 15,
    max_points: int = 6,
    progress: Callable[[str], None] | None = None,
) -> LatencyModel:
    """Measure (or load from the cache) the layer tables and the whole-model fit; return the predictor."""
    if batch < 1:
        raise InputError(f"--batch must be a positive integer, got {batch}")
    settings = {
        "provider": provider, "threads": threads, "batch": int(batch), "round_to": round_to,
        "machine": machine if machine is not None else machine_id(), "ort": _ort_version(),
        "warmup": warmup, "repeats": repeats, "max_points": max_points,
        "synthetic": runner_factory is not None or timer is not time.perf_counter,
    }  # fmt: skip
    key = table_key(analysis, settings)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.json"
    specs, skipped = layer_specs(analysis, round_to, max_points)
    if use_cache and path.exists():
        try:
            table = LatencyTable.from_json(json.loads(path.read_text()))
            if table.key == key and all(s.node in table.nodes for s in specs):
                return LatencyModel(analysis, table, specs)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            pass  # a stale or broken cache file is rebuilt below
    factory = runner_factory or ort_runner_factory(provider, threads)
    t0 = time.perf_counter()
    unique = list({s.config: s for s in specs}.values())
    points = [(spec, ci, co) for spec in unique for ci in spec.grid_in for co in spec.grid_out]
    meds = measure_points(points, batch, factory, timer, warmup, repeats, progress)
    by_config: dict[str, NodeTable] = {}
    for spec in unique:
        ms = np.array([meds[(spec.config, ci, co)] for ci in spec.grid_in for co in spec.grid_out], dtype=np.float64)
        ms = ms.reshape(len(spec.grid_in), len(spec.grid_out))
        by_config[spec.config] = NodeTable(list(spec.grid_in), list(spec.grid_out), ms.tolist())
    count = len(points)
    nodes = {s.node: by_config[s.config] for s in specs}
    if progress:
        progress("whole-model calibration")
    scale, offset, base, calib = calibrate(analysis, specs, nodes, batch, round_to, factory, timer, warmup, repeats)
    table = LatencyTable(key, settings, nodes, scale, offset, base, calib, skipped, count + len(calib),
                         time.perf_counter() - t0)  # fmt: skip
    if use_cache:
        from agmc_onnx.io import write_json

        folder.mkdir(parents=True, exist_ok=True)
        write_json(table.to_json(), path)
    return LatencyModel(analysis, table, specs)
