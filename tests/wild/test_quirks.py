"""One test per exporter quirk of the files from the wild: initializers listed as graph inputs (old IR),
an input size recorded in metadata (Ultralytics), dynamic sizes kept in the written file, Paddle's -1
batch, and a Loop (its outputs' shapes, the cost of what follows it, its body's MACs said not counted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from agmc_onnx import bench
from agmc_onnx.analysis import analyze
from agmc_onnx.cli import main
from agmc_onnx.data import Dataset
from agmc_onnx.evaluate import evaluate_onnx
from agmc_onnx.model import load
from agmc_onnx.plan import Plan
from converters import to_torch
from tests.conftest import helper_model
from tests.helpers_onnx import check_oracles, random_feeds, reference_macs, run
from tests.ops.helpers import conv, weight


def _initializers_first(path: Path, out: Path) -> Path:
    """The zoo file with its initializers listed as graph inputs BEFORE the image input (both orders occur)."""
    m = onnx.load(str(path))
    ins = list(m.graph.input)
    del m.graph.input[:]
    m.graph.input.extend(ins[1:] + ins[:1])
    onnx.save(m, str(out))
    return out


def test_initializers_listed_as_inputs_are_weights_everywhere(wild_file: Callable[[str], Path], tmp_path: Path) -> None:
    """IR 3 (ONNX zoo): every initializer is also a graph input. Bench feeds, ORT scoring, the torch converter
    and the analysis see one input, data_0; the written file lists only it."""
    path = _initializers_first(wild_file("zoo_inception_plain"), tmp_path / "zoo.onnx")
    proto = onnx.load(str(path))
    assert len(proto.graph.input) > 1 and proto.graph.input[-1].name == "data_0"
    assert list(bench.make_inputs(proto, 2)) == ["data_0"]
    a = analyze(load(path))
    assert a.model.input_names == ["data_0"] and list(a.model.input_shapes.dims) == ["data_0"]
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)  # the file's batch is 1
    want = np.concatenate([run(proto, {"data_0": x[k : k + 1]})[0] for k in range(3)])
    ds = Dataset(x, want.argmax(1), [str(k) for k in range(10)])
    assert evaluate_onnx(proto, ds, batch_size=1) == 1.0
    with torch.no_grad():
        got = to_torch(proto)(torch.from_numpy(x[:1])).numpy()
    assert np.allclose(got, want[:1], atol=1e-5)
    r = CliRunner().invoke(main, ["prune", str(path), "--target-flops", "0.5", "--bench-repeats", "3"])
    assert r.exit_code == 0, r.output
    assert [i.name for i in onnx.load(str(tmp_path / "zoo.pruned.onnx")).graph.input] == ["data_0"]


def _yolo_like(meta: bool, batch: object = "batch") -> onnx.ModelProto:
    """A small detector head as Ultralytics writes it with dynamic=True: images[batch, 3, height, width],
    a run-time Reshape target, imgsz/channels in metadata_props."""
    from tests.ops.helpers import runtime_reshape_head

    nodes, inits = runtime_reshape_head()
    nodes = [n for n in nodes if n.op_type != "Gemm"]
    nodes.insert(0, helper.make_node("Identity", ["images"], ["x"], name="id"))
    nodes.append(conv("x", "w0", "y0", "c0"))  # a second graph output
    m = helper_model(nodes + [helper.make_node("Gemm", ["m", "fc"], ["out"], name="fc", transB=1)],
                     [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, "height", "width"])],
                     [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4]),
                      helper.make_tensor_value_info("y0", TensorProto.FLOAT, [batch, 2, "height", "width"])],
                     inits + [weight("w0", 2, 3, 1, 1, seed=3)])  # fmt: skip
    if meta:
        for k, v in (("imgsz", "[32, 48]"), ("channels", "3"), ("stride", "32"), ("task", "detect")):
            m.metadata_props.add(key=k, value=v)
    return m


def test_metadata_input_size_is_the_default_and_said(tmp_path: Path) -> None:
    """No --input-shape: the size Ultralytics recorded (imgsz, channels) is used, and inspect/prune say so;
    the written file keeps images[batch, 3, height, width] and the metadata, and runs at other sizes."""
    path = tmp_path / "yolo.onnx"
    onnx.save(_yolo_like(meta=True), str(path))
    m = load(path)
    assert m.input_shapes.dims == {"images": ("batch", 3, 32, 48)} and m.input_shapes.source == "metadata"
    assert m.notes and "imgsz [32, 48]" in m.notes[0]
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0 and "analysed at images [batch, 3, 32, 48] (from metadata" in r.output
    r = CliRunner().invoke(main, ["prune", str(path), "--target-flops", "0.7", "--bench-repeats", "3"])
    assert r.exit_code == 0, r.output
    assert "input size from the file's metadata" in r.output
    out = onnx.load(str(tmp_path / "yolo.pruned.onnx"))
    src = onnx.load(str(path))
    assert out.graph.input[0].type == src.graph.input[0].type
    assert {(p.key, p.value) for p in src.metadata_props} <= {(p.key, p.value) for p in out.metadata_props}
    rep = json.loads((tmp_path / "yolo.pruned.report.json").read_text())
    assert rep["input_shapes"]["dims"] == {"images": ["batch", 3, 32, 48]} and rep["input_shapes"]["source"] == "metadata"
    for size in ((1, 3, 64, 32), (2, 3, 16, 16)):
        feeds = random_feeds(src, sizes={"images": size})
        assert [o.shape for o in run(out, feeds)] == [o.shape for o in run(src, feeds)]


def test_dynamic_file_without_a_size_is_refused_and_the_flag_works(tmp_path: Path) -> None:
    """No metadata: inspect, prune and bench refuse with one line naming the input, its shape and the flag
    (before anything is written); --input-shape makes all three work, oracles at two sizes."""
    path = tmp_path / "dyn.onnx"
    onnx.save(_yolo_like(meta=False), str(path))
    for cmd in (["inspect"], ["prune", "--target-flops", "0.7"], ["bench"]):
        r = CliRunner().invoke(main, [cmd[0], str(path), *cmd[1:]])
        assert r.exit_code == 2, r.output
        assert "input 'images' has shape [batch, 3, height, width]" in r.output
        assert "--input-shape images:1,3,H,W" in r.output
    assert not (tmp_path / "dyn.pruned.onnx").exists()
    flag = ["--input-shape", "images:1,3,24,40"]
    assert CliRunner().invoke(main, ["inspect", str(path), *flag]).exit_code == 0
    assert CliRunner().invoke(main, ["bench", str(path), "--repeats", "2", *flag]).exit_code == 0
    r = CliRunner().invoke(main, ["prune", str(path), "--target-flops", "0.7", "--bench-repeats", "3", *flag])
    assert r.exit_code == 0, r.output
    a = analyze(load(path, input_shapes={"images": (1, 3, 24, 40)}))
    g = a.prunable_groups()[0]
    check_oracles(path, Plan({g.id: [0, 3, 5]}), a, sizes=[{"images": (1, 3, 24, 40)}, {"images": (1, 3, 8, 16)}])


def test_paddle_minus_one_batch(tmp_path: Path) -> None:
    """Paddle2ONNX writes the batch as dim_value -1 and H/W as '?': symbolic everywhere (feeds, analysis)."""
    path = tmp_path / "cls.onnx"
    m = _yolo_like(meta=False)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_value = -1
        dims[2].dim_param = dims[3].dim_param = "?"
    onnx.save(m, str(path))
    sizes = {"images": (1, 3, 16, 32)}
    assert bench.make_inputs(onnx.load(str(path)), 3, input_shapes=sizes)["images"].shape == (3, 3, 16, 32)
    a = analyze(load(path, input_shapes=sizes))
    g = a.prunable_groups()[0]
    check_oracles(path, Plan({g.id: [1, 2]}), a, sizes=[sizes, {"images": (1, 3, 8, 8)}])


def test_loop_outputs_shaped_conv_after_it_counted_body_said_not_counted(wild_file: Callable[[str], Path]) -> None:
    """A Loop was 'nothing prunable' and the conv after it was counted at 1x1. Now: its carried output has a
    shape (one run), the conv after it is a group and is counted exactly; the conv inside the body is named as
    not counted in inspect (text and JSON)."""
    path = wild_file("cf_loop_around")
    a = analyze(load(path))
    loop = next(n for n in a.model.nodes if n.op_type == "Loop")
    after = next(n for n in a.model.nodes if n.op_type == "Conv" and n.input[0] == loop.output[0])
    assert any(after.name in g.producers and g.prunable for g in a.groups)
    assert a.cost.total_macs == reference_macs(onnx.load(str(path)), {"input": (1, 3, 16, 16)})
    assert a.cost.node_macs()[after.name] == 16 * 16 * 16 * 8 * 9
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0 and f"inside Loop {loop.name}'s body are not counted" in r.output
    info = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)
    assert info["uncounted"] == [{"node": loop.name, "op": "Loop", "mac_ops": 1}]
    reasons = [g["frozen_reason"] for g in info["group_table"] if not g["prunable"]]
    assert any("leave a Loop body" in (r or "") for r in reasons)


@pytest.mark.slow
def test_yolo_dynamic_export_defaults_to_its_recorded_size(wild_file: Callable[[str], Path]) -> None:
    """Ultralytics' dynamic=True export is analysed at the imgsz it records (640) and matches the static
    export's analysis: the same groups, the same MACs."""
    dyn, static = analyze(load(wild_file("ultra_yolov8n_dyn"))), analyze(load(wild_file("ultra_yolov8n")))
    assert dyn.model.input_shapes.dims == {"images": ("batch", 3, 640, 640)}
    assert dyn.cost.total_macs == static.cost.total_macs
    assert len(dyn.prunable_groups()) == len(static.prunable_groups())
