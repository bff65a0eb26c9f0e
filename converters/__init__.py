"""The fine-tuning bridge: ONNX -> torch.nn.Module (onnx2torch) -> ONNX (TorchScript exporter)."""

from converters.onnx_to_torch import ConversionError, to_torch, unsupported_nodes
from converters.torch_to_onnx import to_onnx

__all__ = ["ConversionError", "to_onnx", "to_torch", "unsupported_nodes"]
