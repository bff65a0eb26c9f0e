"""Pruning and recovery without labels (issue 16), end to end through the CLI with default flags: the shipped
ResNet-20 with its labels withheld (an .npz of images only), and a detector-like model with a dense feature map
and an embedding beside its logits (fixtures/multi_output.py) fed a flat folder of images. The written file meets the target,
distillation raises its fidelity above pruning alone, and the searched plan recovers better than the uniform
plan given the same recovery; `finetune` distils a pruned file without labels too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from agmc_onnx.cli import main
from agmc_onnx.cost import count_macs
from agmc_onnx.data.idx import read_idx
from fixtures.multi_output import with_dense_outputs

ROOT = Path(__file__).resolve().parents[2]
RESNET20 = ROOT / "fixtures" / "models" / "resnet20.onnx"
COMMON = ["--target-flops", "0.5", "--reward-images", "128", "--finetune-epochs", "2", "--no-bench", "--threads", "1"]


def _images(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,28,28] images of the shipped Fashion-MNIST (no labels)."""
    data = ROOT / "fixtures" / "data"
    return (read_idx(data / "train-images-idx3-ubyte.gz")[:n_train],
            read_idx(data / "t10k-images-idx3-ubyte.gz")[:n_test])  # fmt: skip


def _prune(model: Path, data: Path, out: Path, *extra: str) -> dict:
    res = CliRunner().invoke(main, ["prune", str(model), "--data", str(data), *COMMON, "-o", str(out), *extra],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(out.with_name(out.name.removesuffix(".onnx") + ".report.json").read_text())


@pytest.fixture(scope="module")
def withheld(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ResNet-20 pruned with default flags on images only (agmc, 8 episodes), and the uniform plan, each
    recovered by two epochs of distillation."""
    tmp = tmp_path_factory.mktemp("labelfree")
    x_train, x_test = _images(1000, 200)
    np.savez(tmp / "images.npz", x_train=x_train, x_test=x_test)  # labels withheld
    agmc = _prune(RESNET20, tmp / "images.npz", tmp / "agmc.onnx", "--episodes", "8")
    uniform = _prune(RESNET20, tmp / "images.npz", tmp / "uniform.onnx", "--strategy", "uniform")
    return {"tmp": tmp, "agmc": agmc, "uniform": uniform}


def _check(rep: dict, written: Path, baseline: dict) -> None:
    """Target met by the written file; distillation beats pruning alone; the plan beats uniform after recovery."""
    models = rep["models"]
    assert count_macs(onnx.load(str(written))) <= 0.5 * models["original"]["macs"] * 1.01
    assert models["original"]["accuracy"] is None and models["finetuned"]["accuracy"] is None
    assert models["finetuned"]["fidelity"] > models["pruned"]["fidelity"]
    assert models["finetuned"]["fidelity"] > baseline["models"]["finetuned"]["fidelity"]
    assert rep["finetune"]["loss"] == "distillation (no labels)" and rep["finetune"]["selected_by"] == "fidelity"


def test_resnet20_labels_withheld(withheld: dict) -> None:
    rep = withheld["agmc"]
    assert rep["reward"] == "fidelity" and rep["search"]["reward"] == "fidelity" and rep["accuracy"] is None
    assert rep["search"]["strategy"] == "agmc" and Path(rep["search"]["png"]).is_file()
    _check(rep, withheld["tmp"] / "agmc.onnx", withheld["uniform"])


def test_finetune_command_without_labels(withheld: dict) -> None:
    """`finetune` on the pruned file with images only: distils from --distill, reports fidelity before/after;
    without a teacher it says what is missing."""
    tmp = withheld["tmp"]
    args = ["finetune", str(tmp / "uniform.onnx"), "--data", str(tmp / "images.npz"), "--epochs", "1",
            "--no-bench", "--no-progress", "-o", str(tmp / "ft.onnx")]  # fmt: skip
    res = CliRunner().invoke(main, [*args, "--distill", str(RESNET20), "--min-fidelity", "50"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp / "ft.report.json").read_text())
    models = rep["models"]
    assert models["original"]["fidelity"] == 1.0 and models["pruned"]["accuracy"] is None
    assert models["finetuned"]["fidelity"] > models["pruned"]["fidelity"]
    assert "fidelity" in res.output and rep["gates"]["passed"]
    assert rep["finetune"]["config"]["temperature"] == 1.0 and rep["finetune"]["config"]["color"] == 0.0
    missing = CliRunner().invoke(main, args)
    assert missing.exit_code == 2 and "--distill" in missing.output


def test_distillation_recipe_flags(withheld: dict) -> None:
    """--temperature, --color-jitter and --distill-features reach the fine-tuning of `prune` (recorded in its report); a
    temperature that is not positive is refused before any work."""
    tmp = withheld["tmp"]
    assert withheld["uniform"]["finetune"]["config"]["temperature"] == 1.0  # the default
    rep = _prune(RESNET20, tmp / "images.npz", tmp / "hot.onnx", "--strategy", "uniform", "--temperature", "4",
                 "--color-jitter", "0.1", "--distill-features", "2", "--feature-weight", "0.5")  # fmt: skip
    assert rep["finetune"]["config"]["temperature"] == 4.0 and rep["finetune"]["config"]["color"] == 0.1
    assert len(rep["finetune"]["feature_points"]) == 2 and rep["finetune"]["config"]["feature_points"] == 2
    assert rep["finetune"]["config"]["feature_weight"] == 0.5
    bad = CliRunner().invoke(main, ["prune", str(RESNET20), "--data", str(tmp / "images.npz"), *COMMON,
                                    "--temperature", "0", "-o", str(tmp / "cold.onnx")])  # fmt: skip
    assert bad.exit_code == 2 and "--temperature" in bad.output and not (tmp / "cold.onnx").exists()


def test_gates_and_reward_without_labels(withheld: dict) -> None:
    """Accuracy gates and --reward accuracy need labels: one line each; --min-fidelity gates without them."""
    tmp = withheld["tmp"]
    base = ["prune", str(RESNET20), "--data", str(tmp / "images.npz"), "--target-flops", "0.5", "--strategy",
            "uniform", "--no-bench", "-o", str(tmp / "gated.onnx")]  # fmt: skip
    acc = CliRunner().invoke(main, [*base, "--min-accuracy", "50"])
    assert acc.exit_code == 1 and "the data has no labels: gate on --min-fidelity" in acc.output
    fid = CliRunner().invoke(main, [*base, "--min-fidelity", "99.9"])
    assert fid.exit_code == 1 and "min-fidelity: pruned fidelity" in fid.output
    reward = CliRunner().invoke(main, [*base, "--strategy", "agmc", "--reward", "accuracy"])
    assert reward.exit_code == 2 and "needs labelled data" in reward.output


def test_detector_like_outputs_from_a_flat_folder(withheld: dict, tmp_path: Path) -> None:
    """Three outputs (logits, a feature map, an embedding), a flat folder of PNG frames, default flags."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    x, _ = _images(800, 0)
    for i, img in enumerate(x):
        Image.fromarray(img).save(frames / f"frame_{i:05d}.png")
    model = with_dense_outputs(RESNET20, tmp_path / "detector.onnx")
    agmc = _prune(model, frames, tmp_path / "agmc.onnx", "--episodes", "8")
    uniform = _prune(model, frames, tmp_path / "uniform.onnx", "--strategy", "uniform")
    assert any("held out" in n for n in agmc["notes"])  # no test split: a slice is held out for the figures
    assert agmc["fidelity"]["test"]["images"] == 160
    assert [s.get("kind") for s in agmc["search"]["outputs"]] == ["logits", "dense", "embedding"]
    _check(agmc, tmp_path / "agmc.onnx", uniform)


class _TwoInputs(torch.nn.Module):
    """A small net with two inputs (an image and a per-example scale), two dense outputs and BN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU())
        self.boxes = torch.nn.Conv2d(32, 4, 1)
        self.scores = torch.nn.Conv2d(32, 3, 1)

    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.stem(image))
        return self.boxes(h) * scale[:, :, None, None], torch.sigmoid(self.scores(h))


def test_two_inputs_by_name(tmp_path: Path) -> None:
    """An .npz of input tensors named after a two-input model's inputs: searched (fidelity), re-calibrated,
    distilled and self-checked with both inputs fed everywhere."""
    import contextlib
    import io
    import warnings

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1500, 3, 16, 16)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, (1500, 1)).astype(np.float32)
    net = _TwoInputs()
    for m in net.modules():  # BN statistics of this data, as a trained model's would be
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.from_numpy(image), torch.from_numpy(scale))
    net.eval()
    model = tmp_path / "two.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 3, 16, 16), torch.ones(2, 1)), str(model), dynamo=False, opset_version=13,
                          input_names=["image", "scale"], output_names=["boxes", "scores"],
                          dynamic_axes={n: {0: "N"} for n in ("image", "scale", "boxes", "scores")},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)  # fmt: skip
    np.savez(tmp_path / "t.npz", image=image, scale=scale)
    rep = _prune(model, tmp_path / "t.npz", tmp_path / "two.pruned.onnx", "--episodes", "3", "--no-augment",
                 "--target-flops", "0.7", "--finetune-epochs", "3")  # fmt: skip
    assert rep["reward"] == "fidelity" and [o["kind"] for o in rep["search"]["outputs"]] == ["dense", "dense"]
    models = rep["models"]
    assert 0 < models["pruned"]["fidelity"] < models["finetuned"]["fidelity"] < 1
    assert count_macs(onnx.load(str(tmp_path / "two.pruned.onnx"))) <= 0.7 * models["original"]["macs"] * 1.01


class _Deaf(torch.nn.Module):
    """Conv-BN-ReLU then a 1x1 conv with zero weights: a constant output whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(8, 4, 1)
        torch.nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_an_output_deaf_to_its_input_is_warned_about(tmp_path: Path) -> None:
    """Fidelity cannot rank plans of a model whose output ignores its input (a random net, wrong inputs): the
    run says so and the report keeps the warning."""
    model = tmp_path / "deaf.onnx"
    torch.onnx.export(_Deaf().eval(), torch.zeros(1, 1, 28, 28), str(model), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                      do_constant_folding=False)  # fmt: skip
    x_train, x_test = _images(300, 60)
    np.savez(tmp_path / "images.npz", x_train=x_train, x_test=x_test)
    res = CliRunner().invoke(main, ["prune", str(model), "--data", str(tmp_path / "images.npz"), "--target-flops",
                                    "0.5", "--episodes", "2", "--reward-images", "64", "--no-bench",
                                    "-o", str(tmp_path / "out.onnx")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "output y barely changes with the input" in res.output
    rep = json.loads((tmp_path / "out.report.json").read_text())
    assert any("barely changes with the input" in w for w in rep["warnings"])
