"""Latency model: NetAdapt-style per-layer lookup tables measured in ONNX Runtime, a predictor, refinement.

layers.py builds a one-layer model of every prunable Conv / Gemm (with the BN / activation ORT fuses
into it) at each (kept input, kept output) width of a grid; measure.py times them all interleaved in
one run, minus an empty model's time; calibrate.py fits `scale * table sum + offset` to whole-model
measurements of the original, uniform cuts and random plans; tables.py holds the tables and the
predictor (bilinear interpolation at the kept widths, summed, mapped by the fit); build.py measures
or loads them from the cache. refine.py closes the
loop on a measured miss, verification.py sets predicted against measured for the report.
"""

from agmc_onnx.latency.build import build_latency_model, default_cache_dir, table_key
from agmc_onnx.latency.calibrate import CALIBRATION_KEEP, CALIBRATION_RANDOM
from agmc_onnx.latency.layers import FUSED_AFTER, LayerSpec, layer_specs
from agmc_onnx.latency.measure import CHUNK_BYTES, RunnerFactory, Timer, machine_id, ort_runner_factory
from agmc_onnx.latency.refine import MeasureFn, Refinement, RefineRound, ort_measure, refine_plan, shrink_plan
from agmc_onnx.latency.tables import FORMAT, LatencyModel, LatencyTable, NodeTable
from agmc_onnx.latency.verification import verification

__all__ = [
    "CALIBRATION_KEEP", "CALIBRATION_RANDOM", "CHUNK_BYTES", "FORMAT", "FUSED_AFTER", "LatencyModel", "LatencyTable",
    "LayerSpec", "MeasureFn", "NodeTable", "RefineRound", "Refinement", "RunnerFactory", "Timer",
    "build_latency_model", "default_cache_dir", "layer_specs", "machine_id",
    "ort_measure", "ort_runner_factory", "refine_plan", "shrink_plan", "table_key", "verification",
]
