"""agmc-onnx: channel pruning of CNNs given as ONNX files (AGMC: GNN encoder + DDPG decoder)."""

__version__ = "0.1.0"
