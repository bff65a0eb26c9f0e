"""ONNX graph -> PyG Data features and the staged GNN encoder."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from agmc_onnx.analysis import analyze
from agmc_onnx.encoder import NUM_NODE_FEATURES, GraphEncoder, graph_data
from agmc_onnx.encoder.features import OP_TYPES
from agmc_onnx.model import load


def exported(name: str, out: Path) -> Path:
    """One of the engine's fixture nets exported with BN kept."""
    from fixtures.engine_nets import export_net

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return export_net(name, out, "bn")


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = exported("resnet20", tmp_path_factory.mktemp("enc"))
    return analyze(load(path))


def test_graph_data_mirrors_the_onnx_graph(resnet20) -> None:  # noqa: ANN001
    model = resnet20.model
    data, info = graph_data(model, resnet20.groups)
    nodes = model.nodes
    assert data.num_nodes == len(nodes) and data.x.shape == (len(nodes), NUM_NODE_FEATURES)
    edges = sum(1 for n in nodes for t in n.input if t in model.producer)
    assert data.edge_index.shape == (2, edges)
    conv = OP_TYPES.index("Conv")
    assert int(data.x[:, conv].sum()) == sum(n.op_type == "Conv" for n in nodes)
    adds = sum(n.op_type == "Add" for n in nodes)
    assert info.num_blocks == adds + 1  # one block per residual merge, plus the tail
    prunable = resnet20.prunable_groups()
    assert info.group_ids == [g.id for g in prunable]
    marked = {i for idx in info.group_nodes for i in idx}
    assert marked == {info.names.index(p) for g in prunable for p in g.producers}
    assert torch.all(data.x >= 0) and torch.all(data.x <= 1.0 + 1e-6)
    macs_share = data.x[:, len(OP_TYPES) + 1 + 8]
    assert abs(float(macs_share.sum()) - 1.0) < 1e-4


def test_encoder_gives_graph_and_group_embeddings_with_gradients(resnet20) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    data, info = graph_data(resnet20.model, resnet20.groups)
    enc = GraphEncoder(hidden=32, embed=16)
    graph, groups = enc(data, info)
    assert graph.shape == (16,) and groups.shape == (len(info.group_ids), 16)
    assert torch.isfinite(groups).all()
    assert torch.unique(groups.round(decimals=4), dim=0).shape[0] > len(info.group_ids) // 2
    (graph.sum() + groups.pow(2).sum()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_one_encoder_reads_models_of_any_size(resnet20, tmp_path: Path) -> None:  # noqa: ANN001
    other = analyze(load(exported("mobilenetv2", tmp_path)))
    enc = GraphEncoder()
    g1, e1 = enc(*graph_data(resnet20.model, resnet20.groups))
    g2, e2 = enc(*graph_data(other.model, other.groups))
    assert g1.shape == g2.shape
    assert e2.shape[0] == len(other.prunable_groups()) != e1.shape[0]
    assert not torch.allclose(g1, g2)


def test_lstm_decoder_states_and_policy_decoder_check(resnet20, tmp_path: Path) -> None:  # noqa: ANN001
    """The paper's LSTM decoder: one state row per group, trainable end to end; policies name their decoder."""
    from agmc_onnx.errors import InputError
    from agmc_onnx.rl import DDPG
    from agmc_onnx.rl.states import GraphStates, LSTMGraphStates

    lstm = LSTMGraphStates(resnet20)
    table = lstm()
    steps = len(resnet20.prunable_groups())
    assert table.shape == (steps, lstm.dim) and not torch.allclose(table[0], table[-1])
    table.sum().backward()
    assert lstm.lstm.weight_ih_l0.grad is not None and lstm.encoder.inp[0].weight.grad is not None
    saved = DDPG(lstm, steps, seed=0).policy_dict()
    assert saved["decoder"] == "lstm"
    with pytest.raises(InputError, match="decoder 'lstm'"):
        DDPG(GraphStates(resnet20), steps, seed=0).load_policy(saved)
    DDPG(LSTMGraphStates(resnet20), steps, seed=0).load_policy(saved)


def test_standardized_group_states(resnet20) -> None:  # noqa: ANN001
    """standardize (the default): each group-embedding column has zero mean, unit std over the groups; the graph part is untouched."""
    from agmc_onnx.rl.states import GraphStates

    torch.manual_seed(0)
    plain = GraphStates(resnet20, standardize=False)
    std = GraphStates(resnet20, encoder=plain.encoder)
    a, b = plain(), std()
    half = plain.encoder.embed
    assert torch.equal(a[:, :half], b[:, :half])
    assert torch.allclose(b[:, half:].mean(0), torch.zeros(half), atol=1e-5)
    assert torch.allclose(b[:, half:].std(0, unbiased=False), torch.ones(half), atol=0.1)
    b.sum().backward()
    assert plain.encoder.inp[0].weight.grad is not None


def test_building_the_encoder_leaves_no_temporary_files(tmp_path: Path) -> None:
    """PyG's MessagePassing writes a generated module to the temp dir per process; FlowConv must not."""
    code = "from agmc_onnx.encoder import GraphEncoder; GraphEncoder()"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    assert list(tmp_path.iterdir()) == []
