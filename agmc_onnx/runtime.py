"""ONNX Runtime access: one place that imports it and picks execution providers."""

from __future__ import annotations

from typing import Any

from agmc_onnx.errors import RuntimeMissingError


def ort() -> Any:
    """Import onnxruntime, or say how to install it: the `cpu` or `gpu` extra, never both."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise RuntimeMissingError(
            "ONNX Runtime is not installed: pip install 'agmc-onnx[cpu]' or 'agmc-onnx[gpu]' (not both)"
        ) from exc
    return onnxruntime


def providers(kind: str = "cpu") -> list[str]:
    """Execution providers for `kind` ('cpu' or 'cuda'); 'cuda' falls back to CPU after CUDA."""
    available = ort().get_available_providers()
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeMissingError("CUDAExecutionProvider is not available: install agmc-onnx[gpu]")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model: Any, kind: str = "cpu", threads: int | None = None) -> Any:
    """An InferenceSession over a path, bytes or ModelProto, graph optimisations on."""
    rt = ort()
    opts = rt.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        model = str(model)
    return rt.InferenceSession(model, sess_options=opts, providers=providers(kind))
