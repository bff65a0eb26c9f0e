"""The shipped fixture models load, run in ONNX Runtime and reach the accuracy recorded in their README."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from agmc_onnx.data import batches, fashion_mnist_dir, load_dataset
from fixtures.architectures import build

MODELS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "models"
MODELS = ("resnet20", "resnet56", "mobilenetv2", "vgg11")
SUBSET_COLUMN = "ONNX acc., shipped test subset"
MAX_FILE_BYTES = 16 * 2**20
MAX_TOTAL_BYTES = 15 * 2**20


def recorded() -> dict[str, dict[str, str | float]]:
    """model -> {'accuracy': fraction from the README table, 'sha256': from the Files table}."""
    text = (MODELS_DIR / "README.md").read_text(encoding="utf-8")
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in text.splitlines() if ln.startswith("|")]
    header = next((r for r in rows if SUBSET_COLUMN in r), None)
    assert header, f"{MODELS_DIR / 'README.md'} has no results table: train, then run fixtures/record_models.py"
    col = header.index(SUBSET_COLUMN)
    out: dict[str, dict[str, str | float]] = {}
    for r in rows:
        if len(r) == len(header) and r[0] in MODELS:
            out[r[0]] = {"accuracy": float(r[col].rstrip("%")) / 100}
        m = re.fullmatch(r"`(\w+)\.onnx`", r[0]) if len(r) == 2 else None
        if m and m.group(1) in out:
            out[m.group(1)]["sha256"] = r[1].strip("`")
    return out


@pytest.fixture(scope="module")
def test_subset():
    """The shipped 2,000-image test subset, preprocessed for [N,1,28,28] pixel/255 models."""
    return load_dataset(fashion_mnist_dir(), "test", num_classes=10)


def test_readme_records_every_model() -> None:
    rec = recorded()
    assert set(rec) == set(MODELS)
    assert all("sha256" in r for r in rec.values())


@pytest.mark.parametrize("name", MODELS)
def test_model_file_contract(name: str) -> None:
    path = MODELS_DIR / f"{name}.onnx"
    assert path.stat().st_size <= MAX_FILE_BYTES
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded()[name]["sha256"], \
        f"{path.name} changed since fixtures/record_models.py recorded it"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 13
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "input" and isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    assert out.name == "logits"
    n_bn = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    assert n_bn == sum(type(m).__name__ == "BatchNorm2d" for m in build(name).modules()) > 0


@pytest.mark.parametrize("name", MODELS)
def test_model_accuracy_on_shipped_subset(name: str, test_subset) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(MODELS_DIR / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
    preds = np.concatenate([sess.run(["logits"], {"input": x})[0].argmax(1) for x, _ in batches(test_subset, 500)])
    acc = float((preds == test_subset.y).mean())
    assert abs(acc - recorded()[name]["accuracy"]) <= 0.01, f"{name}: {acc:.4f} on the shipped subset"


def test_models_dir_total_size() -> None:
    total = sum(p.stat().st_size for p in MODELS_DIR.iterdir() if p.is_file())
    assert total <= MAX_TOTAL_BYTES


HELD_OUT_DIR = MODELS_DIR / "heldout"


def held_out_models() -> list[str]:
    """The held-out models shipped (issue 19): every .onnx under fixtures/models/heldout."""
    return sorted(p.stem for p in HELD_OUT_DIR.glob("*.onnx"))


def test_held_out_models_are_the_listed_ones() -> None:
    """Each shipped held-out file is one fixtures/architectures.py names held out (the benchmark reports it apart)."""
    from fixtures.architectures import HELD_OUT

    assert {"resnet32", "wrn16_2", "wrn16_4", "mobilenetv2_w1"} <= set(held_out_models()) <= set(HELD_OUT)


@pytest.mark.parametrize("name", held_out_models())
def test_held_out_model_with_its_sidecar(name: str, test_subset) -> None:
    """Checker passes; the sidecar's normalisation is the one trained with; with it, accuracy on the shipped
    2,000 test images is within 2 points (3 std of a 2,000-image estimate) of the full-test figure recorded."""
    import onnxruntime as ort

    path = HELD_OUT_DIR / f"{name}.onnx"
    onnx.checker.check_model(str(path))
    sidecar = json.loads((HELD_OUT_DIR / f"{name}.preprocess.json").read_text())
    record = json.loads((HELD_OUT_DIR / f"{name}.json").read_text())
    assert sidecar["scale"] == "1/255" and len(sidecar["mean"]) == len(sidecar["std"]) == 1
    mean, std = sidecar["mean"][0], sidecar["std"][0]
    assert record["model"] == name and f"(pixel/255 - {mean}) / {std}" in record["recipe"]["input"]
    assert test_subset.x.max() <= 1.0  # the loader already scaled by 1/255
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds = np.concatenate([sess.run(["logits"], {"input": ((x - mean) / std).astype(np.float32)})[0].argmax(1)
                            for x, _ in batches(test_subset, 500)])
    acc = float((preds == test_subset.y).mean())
    assert abs(acc - record["test_accuracy"]) <= 0.02, f"{name}: {acc:.4f} vs recorded {record['test_accuracy']}"
