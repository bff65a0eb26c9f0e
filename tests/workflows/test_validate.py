"""agmc_onnx.workflows.validate: what a checked request holds, and the checks the CLI corpus reaches only
through a command (tests/commands holds the black-box cases)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from agmc_onnx.errors import InputError
from agmc_onnx.workflows.options import PruneOptions
from agmc_onnx.workflows.validate import (
    CHECKPOINT_FILE,
    check_image_input,
    check_torch_file,
    probe_runtime,
    validate_bench,
    validate_prune,
)
from tests.commands.refusal_kit import custom_op, dynamic_spatial, int64_input, npz
from tests.helpers_onnx import tiny_convnet


def _model(d: Path, proto: onnx.ModelProto | None = None, name: str = "m.onnx") -> Path:
    onnx.save_model(proto if proto is not None else tiny_convnet(), str(d / name))
    return d / name


def test_checkpoint_name_matches_the_search() -> None:
    """validate.py names the checkpoint file without importing torch; it must be the search's."""
    from agmc_onnx.rl.search import CHECKPOINT

    assert CHECKPOINT_FILE == CHECKPOINT


def test_validation_imports_no_torch_and_no_runtime() -> None:
    """The module (and what it imports) loads without torch, torch_geometric or onnxruntime."""
    code = ("import sys, agmc_onnx.workflows.validate, agmc_onnx.workflows.prune; "
            "print(' '.join(m for m in ('torch', 'torch_geometric', 'onnxruntime') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_prune_request_lists_every_output(tmp_path: Path) -> None:
    """A search run stages model, report, markdown, plot, sidecar and policy; its checkpoint is not staged."""
    src = _model(tmp_path)
    (tmp_path / "m.preprocess.json").write_text('{"scale": "1/255"}')
    data = npz(tmp_path / "d.npz")
    opts = PruneOptions(target_flops=0.5, data=data, output=tmp_path / "o.onnx", save_policy=tmp_path / "p.pt",
                        bench=False)  # fmt: skip
    req = validate_prune(src, opts)
    assert req.strategy == "agmc" and req.output == tmp_path / "o.onnx" and not req.bench
    assert sorted(p.name for p in req.staged) == ["o.onnx", "o.preprocess.json", "o.report.json", "o.report.md",
                                                   "o.report.png", "p.pt"]  # fmt: skip
    assert req.context.train is not None and len(req.context.train) == 80 and req.context.test is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx", "m.preprocess.json"]


def test_labels_beyond_the_models_classes(tmp_path: Path) -> None:
    src = _model(tmp_path)
    data = npz(tmp_path / "l.npz", classes=6)
    with pytest.raises(InputError, match=r"l\.npz: label 4 at index 4 is out of range for 4 classes"):
        validate_prune(src, PruneOptions(target_flops=0.5, data=data, bench=False))


def test_torch_files_are_checked_without_torch(tmp_path: Path) -> None:
    (tmp_path / "g.pt").write_bytes(b"\x80garbage" * 10)
    with pytest.raises(InputError, match=r"g\.pt: not a readable policy file: corrupt, truncated"):
        check_torch_file(tmp_path / "g.pt", "--policy", "policy file")


def test_image_input_must_be_one_float_tensor() -> None:
    with pytest.raises(InputError, match=r"int\.onnx: input 'input' is int64; --data images need a float32"):
        check_image_input(int64_input(), "int.onnx")
    check_image_input(tiny_convnet(), "m.onnx")


def test_probe_runtime_names_what_ort_cannot_run(tmp_path: Path) -> None:
    """A custom op fails at the session, a symbolic image size only where the model will be timed."""
    with pytest.raises(InputError, match=r"op\.onnx: ONNX Runtime cannot run this model: .*MyScale"):
        probe_runtime(custom_op(), "op.onnx")
    with pytest.raises(InputError, match=r"dyn\.onnx: input .input. has shape .*: give its size with --input-shape input:1,3,H,W"):
        probe_runtime(dynamic_spatial(), "dyn.onnx", need_static=True)
    probe_runtime(dynamic_spatial(), "dyn.onnx", need_static=False)


def test_bench_request_reads_each_file_once(tmp_path: Path) -> None:
    src = _model(tmp_path)
    req = validate_bench([src, src])
    assert req.labels == ["m.onnx", "m.onnx"] and len(req.protos) == 2
    assert np.array_equal(onnx.numpy_helper.to_array(req.protos[0].graph.initializer[0]),
                          onnx.numpy_helper.to_array(tiny_convnet().graph.initializer[0]))  # fmt: skip


def test_an_unknown_encoder_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--encoder must be one of auto, frozen, trained, not 'warm'"):
        validate_prune(str(_model(tmp_path)), PruneOptions(target_flops=0.5, encoder="warm"))
