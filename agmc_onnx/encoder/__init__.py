"""Graph encoder: ONNX graph -> PyG `Data` -> staged GNN (ops, blocks, graph) embeddings."""

from agmc_onnx.encoder.features import NUM_NODE_FEATURES, GraphInfo, graph_data, model_proto
from agmc_onnx.encoder.gnn import GraphEncoder

__all__ = ["NUM_NODE_FEATURES", "GraphEncoder", "GraphInfo", "graph_data", "model_proto"]
