"""The NetworkX view the encoder reads: every node with its layer attributes, MACs as the cost model counts them."""

from __future__ import annotations

from agmc_onnx.encoder import graph_view
from agmc_onnx.model import load


def test_shapes_and_networkx_view(nets: dict) -> None:
    """Every node has the attributes the encoder reads; convs have channels, kernel, stride and MACs."""
    m = load(nets["dwse"])
    g = graph_view(m)
    assert g.number_of_nodes() == len(m.nodes) and g.number_of_edges() > 0
    keys = {"op", "c_in", "c_out", "kernel", "stride", "groups", "spatial", "macs", "params"}
    for _, d in g.nodes(data=True):
        assert keys <= set(d)
    convs = [d for _, d in g.nodes(data=True) if d["op"] == "Conv"]
    dw = [d for d in convs if d["groups"] > 1]
    assert dw and all(d["c_in"] == d["groups"] for d in dw)
    assert all(d["macs"] > 0 and d["params"] > 0 and d["spatial"] for d in convs)


def test_node_macs_sum(analyses: dict) -> None:
    """Per-node MACs sum to the total and match the NetworkX view."""
    a = analyses["dense"]
    per = a.cost.node_macs()
    assert sum(per.values()) == a.cost.total_macs
    g = graph_view(a.model)
    assert sum(d["macs"] for _, d in g.nodes(data=True)) == a.cost.total_macs
