"""Graph encoder: model -> NetworkX view -> PyG `Data` -> staged GNN (ops, blocks, graph) embeddings."""

from agmc_onnx.encoder.features import NUM_NODE_FEATURES, GraphInfo, graph_data
from agmc_onnx.encoder.gnn import GraphEncoder
from agmc_onnx.encoder.graph import graph_view

__all__ = ["NUM_NODE_FEATURES", "GraphEncoder", "GraphInfo", "graph_data", "graph_view"]
