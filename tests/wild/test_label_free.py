"""Label-free pruning and recovery of files from the wild that are not classifiers (issue 16), end to end through
the CLI: a YOLOv8n export (random weights, BN statistics calibrated so its outputs depend on its input; dynamic size) and the trained PaddleOCR det model, fed a flat folder of
synthetic text scenes (fixtures/text_images.py), the search rewarded by fidelity, recovered by distillation. The
written file meets the target, keeps the file's dynamic sizes, runs at another size, and (the trained
PaddleOCR model) distillation raises its fidelity on the test images above pruning alone. Slow (searches and trains at 96-128 px); the benchmark at a larger size and
with every strategy is benchmarks/label_free_task.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from agmc_onnx.cli import main
from fixtures.text_images import write_folder
from tests.helpers_onnx import reference_macs, run

pytestmark = pytest.mark.slow

# fixture -> (input name, size, the model's preprocessing flags, whether 2 epochs of distillation must raise the
# test fidelity). The random YOLOv8n's class scores are ~2e-5 probabilities that vary by ~1e-5 with the input:
# no pruned net reproduces that noise in a few steps (benchmarks/label_free.md), so only the trained PaddleOCR
# model is held to recovering.
CASES = {
    "paddle_det": ("x", 96, ["--mean", "0.5", "--std", "0.5", "--channel-order", "bgr"], True),
    "ultra_yolov8n_cal_dyn": ("images", 128, [], False),  # Ultralytics' metadata gives /255 and RGB
}


def _invoke(*args: str) -> None:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output


def _dims(model: onnx.ModelProto) -> list[list[int | str]]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]]  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_label_free_prune_and_distil(name: str, wild_file: Callable[[str], Path], tmp_path: Path) -> None:
    """`prune` with agmc on unlabelled images (fidelity reward, the default without labels), then `finetune
    --distill`: target met by ORT's own shapes, the file's symbolic sizes kept by both files, the recovered
    file runs at another size like the original, and (trained model) its test fidelity is above pruning alone."""
    inp, size, pre, recovers = CASES[name]
    model = wild_file(name)
    data = write_folder(tmp_path / "images", 160, 32, size, seed=0)
    shape = ["--input-shape", f"{inp}:1,3,{size},{size}"]
    pruned, recovered = tmp_path / "pruned.onnx", tmp_path / "recovered.onnx"
    _invoke("prune", str(model), "--target-flops", "0.5", "--data", str(data), *shape, *pre, "--episodes", "6",
            "--no-bench", "--threads", "1", "-o", str(pruned))  # fmt: skip
    _invoke("finetune", str(pruned), "--data", str(data), "--distill", str(model), *shape, "--epochs", "2",
            "--batch-size", "16", "--no-bench", "-o", str(recovered), "--report", str(tmp_path / "ft.json"))  # fmt: skip
    rep = json.loads((tmp_path / "pruned.report.json").read_text())
    assert rep["reward"] == "fidelity" and rep["accuracy"] is None
    at = {inp: (1, 3, size, size)}
    original = onnx.load(str(model))
    for path in (pruned, recovered):
        written = onnx.load(str(path))
        onnx.checker.check_model(written, full_check=True)
        assert reference_macs(written, at) <= 0.5 * reference_macs(original, at) * 1.02  # ORT's own shapes
        assert _dims(written) == _dims(original)
    other = np.random.default_rng(0).random((2, 3, size + 32, size + 64), np.float32)
    assert [o.shape for o in run(recovered, {inp: other})] == [o.shape for o in run(model, {inp: other})]
    ft = json.loads((tmp_path / "ft.json").read_text())
    assert ft["finetune"]["loss"] == "distillation (no labels)" and ft["finetune"]["selected_by"] == "fidelity"
    before, after = ft["models"]["pruned"]["fidelity"], ft["models"]["finetuned"]["fidelity"]
    assert after > before if recovers else after >= before - 0.02  # the best held-out epoch, epoch 0 included
