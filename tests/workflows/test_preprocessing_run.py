"""One preprocessing per run (issue 12): a model that expects mean/std-normalised input, with a sidecar, is
searched, re-calibrated, fine-tuned and written for THAT input; the written file records it, and every figure
in the report equals an independent ONNX Runtime evaluation of the written file with the sidecar's recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from agmc_onnx.cli import main
from agmc_onnx.data import METADATA_KEY
from fixtures.normalised import FASHION_MNIST_MEAN, FASHION_MNIST_STD, normalise_input, write_sidecar

ROOT = Path(__file__).resolve().parents[2]


def _fashion(n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """A class-balanced slice of the shipped Fashion-MNIST, uint8 HWC."""
    from agmc_onnx.data.idx import read_idx

    data = ROOT / "fixtures" / "data"
    out = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x = read_idx(data / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(data / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[: n // 10] for c in range(10)]))
        out[f"x_{split}"], out[f"y_{split}"] = x[idx][..., None], y[idx]
    return out


def independent_accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an ONNX file in ORT on uint8 images normalised by the sidecar's recipe, by hand."""
    z = (x.astype(np.float32) / 255.0 - np.float32(FASHION_MNIST_MEAN[0])) / np.float32(FASHION_MNIST_STD[0])
    z = z.transpose(0, 3, 1, 2)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: z[i:i + 500]})[0] for i in range(0, len(z), 500)])
    return float((logits.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shipped ResNet-20 re-expressed for normalised input, its sidecar, and a small npz of the data."""
    tmp = tmp_path_factory.mktemp("norm")
    model = normalise_input(ROOT / "fixtures" / "models" / "resnet20.onnx", tmp / "r20n.onnx")
    write_sidecar(model)
    arrays = _fashion(1500, 600)
    np.savez(tmp / "fm.npz", **arrays)
    return {"tmp": tmp, "model": model, "data": tmp / "fm.npz", **arrays}


def _prune(case: dict, out: Path, *extra: str, model: Path | None = None):  # noqa: ANN202
    args = ["prune", str(model or case["model"]), "--target-flops", "0.5", "--data", str(case["data"]),
            "--reward-images", "300", "--no-bench", "--threads", "1", "-o", str(out), *extra]  # fmt: skip
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_fixture_keeps_accuracy(case: dict) -> None:
    """The premise: the re-expressed model scores like the shipped one on normalised input (~94%)."""
    assert independent_accuracy(case["model"], case["x_test"], case["y_test"]) > 0.9


def test_search_report_equals_the_written_file(case: dict) -> None:
    """Searched with the sidecar: original ~94% (not the 26% of pixel/255), and the report's pruned accuracy is
    what the written file scores when fed as the sidecar says (fails on the code before issue 12)."""
    out = case["tmp"] / "searched.onnx"
    res = _prune(case, out, "--strategy", "agmc", "--episodes", "3")
    assert res.exit_code == 0, res.output
    rep = json.loads(out.with_name("searched.report.json").read_text())
    assert rep["accuracy"]["reward_split"]["original"] > 0.9
    truth = independent_accuracy(out, case["x_test"], case["y_test"])
    assert abs(rep["accuracy"]["test"]["pruned"] - truth) <= 0.001
    assert abs(rep["models"]["pruned"]["accuracy"] - truth) <= 0.001
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props if p.key == METADATA_KEY}
    assert props[METADATA_KEY]["mean"] == list(FASHION_MNIST_MEAN) and props[METADATA_KEY]["std"] == list(FASHION_MNIST_STD)
    assert json.loads(out.with_name("searched.preprocess.json").read_text())["std"] == list(FASHION_MNIST_STD)


def test_finetune_in_prune_and_finetune_of_the_pruned_file(case: dict) -> None:
    """--finetune-epochs trains on the normalised inputs; `finetune out.onnx` reads the recipe from the file's own
    metadata (its sidecar removed); both reports equal an independent evaluation of their written files."""
    out = case["tmp"] / "tuned.onnx"
    res = _prune(case, out, "--strategy", "l1-global", "--finetune-epochs", "1")
    assert res.exit_code == 0, res.output
    rep = json.loads(out.with_name("tuned.report.json").read_text())
    truth = independent_accuracy(out, case["x_test"], case["y_test"])
    assert abs(rep["models"]["finetuned"]["accuracy"] - truth) <= 0.001
    assert rep["models"]["finetuned"]["accuracy"] > 0.5
    out.with_name("tuned.preprocess.json").unlink()
    again = case["tmp"] / "again.onnx"
    res = CliRunner().invoke(main, ["finetune", str(out), "--data", str(case["data"]), "--epochs", "1",
                                    "--no-bench", "--no-progress", "-o", str(again)], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    rep2 = json.loads(again.with_name("again.report.json").read_text())
    truth2 = independent_accuracy(again, case["x_test"], case["y_test"])
    assert abs(rep2["models"]["finetuned"]["accuracy"] - truth2) <= 0.001
    assert abs(rep2["models"]["pruned"]["accuracy"] - truth) <= 0.001
    assert "preprocessing may be wrong" not in res.output


def test_without_the_sidecar_the_run_warns(case: dict) -> None:
    """The same model with no sidecar: the original scores near chance on pixel/255, and the run says why."""
    bare = case["tmp"] / "bare" / "r20n.onnx"
    bare.parent.mkdir()
    bare.write_bytes(case["model"].read_bytes())
    res = CliRunner().invoke(main, ["prune", str(bare), "--target-flops", "0.5", "--data",
                                                    str(case["data"]), "--strategy", "uniform", "--reward-images", "300",
                                                    "--no-bench", "-o", str(bare.with_name("o.onnx"))])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "preprocessing may be wrong" in res.stderr
    assert "r20n.preprocess.json" in res.stderr and "--mean" in res.stderr


def test_flags_win_over_a_missing_sidecar(case: dict) -> None:
    """--scale/--mean/--std give the recipe without a sidecar: no warning, the file records it."""
    bare = case["tmp"] / "flags" / "r20n.onnx"
    bare.parent.mkdir()
    bare.write_bytes(case["model"].read_bytes())
    out = bare.with_name("o.onnx")
    res = CliRunner().invoke(main, [
        "prune", str(bare), "--target-flops", "0.5", "--data", str(case["data"]), "--strategy", "uniform",
        "--reward-images", "300", "--no-bench", "-o", str(out), "--scale", "1/255",
        "--mean", str(FASHION_MNIST_MEAN[0]), "--std", str(FASHION_MNIST_STD[0])])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "preprocessing may be wrong" not in res.stderr
    rep = json.loads(out.with_name("o.report.json").read_text())
    assert abs(rep["models"]["pruned"]["accuracy"] - independent_accuracy(out, case["x_test"], case["y_test"])) <= 0.001
    assert not out.with_name("o.preprocess.json").exists()  # the input had no sidecar: the metadata carries it
