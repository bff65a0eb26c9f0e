"""agmc_onnx/encoder/features.py on a transformer: heads, head dim, statistic and activation-product features."""

from __future__ import annotations

import math
from pathlib import Path

from agmc_onnx.analysis import analyze
from agmc_onnx.encoder import NUM_NODE_FEATURES, graph_data
from agmc_onnx.encoder.features import OP_TYPES
from agmc_onnx.model import load

VIT = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "vit_tiny.onnx"


def test_transformer_features() -> None:
    """The ViT fixture: each qkv Linear is marked as a producer of 4 heads of 48 rows, the patch conv (the
    stream's first producer) as normalised by LayerNorms, the two attention products of each block as
    products of two activations; LayerNormalization and Softmax have op slots of their own."""
    a = analyze(load(VIT))
    data, info = graph_data(a.model, a.groups)
    assert data.x.shape[1] == NUM_NODE_FEATURES
    row = {name: data.x[i].tolist() for i, name in enumerate(info.names)}
    base = len(OP_TYPES) + 1 + 17
    heads, width, stat, product = base, base + 1, base + 2, base + 3
    qkv = row["/blocks.0/attn/qkv/MatMul"]
    assert math.isclose(qkv[heads], math.log2(5) / 8, rel_tol=1e-6)
    assert math.isclose(qkv[width], math.log2(49) / 8, rel_tol=1e-6) and qkv[stat] == 0.0
    assert row["/patch_embed/Conv"][stat] == 1.0 and row["/patch_embed/Conv"][heads] == 0.0
    nodes = {n.name: n for n in a.model.nodes}
    products = [n for n, r in row.items() if r[product] == 1.0]
    assert len(products) == 6 and all(nodes[n].op_type == "MatMul" and nodes[n].input[1] not in a.model.inits
                                      for n in products)
    assert row["/blocks.0/fc1/MatMul"][product] == 0.0
    ln = next(n.name for n in a.model.nodes if n.op_type == "LayerNormalization")
    assert row[ln][OP_TYPES.index("LayerNormalization")] == 1.0
