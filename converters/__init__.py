"""The fine-tuning bridge: ONNX -> torch.nn.Module (onnx2torch) -> ONNX (TorchScript exporter)."""

from converters.onnx_to_torch import ConversionError, to_torch, unsupported_nodes
from converters.torch_to_onnx import check_other_size, declared_axes, to_onnx

__all__ = ["ConversionError", "check_other_size", "declared_axes", "to_onnx", "to_torch", "unsupported_nodes"]
