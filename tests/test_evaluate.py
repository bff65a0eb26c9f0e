"""agmc_onnx.evaluate: masked, sliced and pruned scoring agree with surgery and with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from agmc_onnx.analysis import Analysis
from agmc_onnx.api import analyze
from agmc_onnx.data import Preprocess, load_dataset, reward_split
from agmc_onnx.errors import InputError
from agmc_onnx.evaluate import Evaluator, evaluate_onnx
from agmc_onnx.plan import Plan, plan_from_counts
from agmc_onnx.rl.env import PruningEnv
from agmc_onnx.surgery import mask, prune

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _export(name: str, directory: Path) -> Path:
    """An engine fixture net with BN kept, exported without the exporter's warnings and prints."""
    from fixtures.engine_nets import export_net

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return export_net(name, directory, "bn")


def _random_plan(a: Analysis, env: PruningEnv, rng: np.random.Generator) -> Plan:
    """The plan of one episode of random actions (within the env's MACs budget)."""
    env.reset()
    while env.t < env.steps:
        env.step(float(rng.random()))
    return plan_from_counts(a, env.chosen)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine's Flatten->Gemm fixture (1x28x28, BN kept): Fashion-MNIST shaped, tiny."""
    return _export("flatten_gemm", tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def data(net: Path) -> SimpleNamespace:
    """200 reward images cut from the shipped train split, 128 of the rest for BN (as the search loads them)."""
    train = load_dataset(DATA, "train", Preprocess.for_model(analyze(net).model.proto))
    split = reward_split(train, 200, 0)
    return SimpleNamespace(reward=split.reward, calibration=split.rest.subset(np.arange(128)))


def test_masked_score_is_what_surgery_writes(net: Path, data: SimpleNamespace) -> None:
    a = analyze(net)
    env = PruningEnv.from_analysis(a, 0.5, 1, 0.2)
    rng = np.random.default_rng(3)
    plan = _random_plan(a, env, rng)
    raw = Evaluator(a, data.reward, data.calibration, bn_recalibrate=False, device="cpu", mode="mask")
    assert raw.score(plan) == evaluate_onnx(prune(a, plan), data.reward) == evaluate_onnx(mask(a, plan), data.reward)
    by_mask = Evaluator(a, data.reward, data.calibration, device="cpu", mode="mask")
    by_prune = Evaluator(a, data.reward, data.calibration, device="cpu", mode="prune")
    assert by_mask.bn_recalibrated
    assert abs(by_mask.score(plan) - by_prune.score(plan)) <= 1 / len(data.reward)


@pytest.mark.parametrize("name", ["flatten_gemm", "vgg_bn"])
def test_sliced_scoring_equals_surgery(name: str, data: SimpleNamespace, tmp_path: Path) -> None:
    """The auto evaluator slices the converted original; its scores equal surgery + conversion's."""
    a = analyze(_export(name, tmp_path))
    env = PruningEnv.from_analysis(a, 0.5, 1, 0.2)
    rng = np.random.default_rng(1)
    reward = data.reward.subset(np.arange(100))
    for bn in (True, False):
        sliced = Evaluator(a, reward, data.calibration, bn_recalibrate=bn, device="cpu", threads=1)
        by_prune = Evaluator(a, reward, data.calibration, bn_recalibrate=bn, device="cpu", threads=1, mode="prune")
        assert sliced.mode == "slice"
        for _ in range(2):
            plan = _random_plan(a, env, rng)
            assert abs(sliced.score(plan) - by_prune.score(plan)) <= 1 / len(reward) + 1e-9


@pytest.mark.parametrize("name", ["mobilenetv2"])
def test_sliced_scoring_follows_depthwise_convs(name: str, tmp_path: Path) -> None:
    """Depthwise convs (surgery rewrites `group`): slice mode sets the conv's groups, equal to surgery."""
    a = analyze(_export(name, tmp_path))
    assert a.hooks  # the premise: this model needs a surgery hook
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    reward = SimpleNamespace(x=x, y=rng.integers(0, 10, 64))
    calib = SimpleNamespace(x=rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
    sliced = Evaluator(a, reward, calib, calib_images=64, device="cpu", threads=1)
    assert sliced.mode == "slice", sliced.slice_fallback
    env = PruningEnv.from_analysis(a, 0.5, 1, 0.2)
    for _ in range(2):
        plan = _random_plan(a, env, rng)
        module = sliced._sliced(plan)
        want = _ort_outputs(prune(a, plan), x[:8])
        with torch.inference_mode():
            got = module(torch.as_tensor(x[:8])).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    sliced._restore_slices(sliced._slots)  # the original comes back whole, groups included
    with torch.inference_mode():
        whole = sliced.module(torch.as_tensor(x[:8])).numpy()
    np.testing.assert_allclose(whole, _ort_outputs(a.model.proto, x[:8]), rtol=1e-4, atol=1e-4)


def _ort_outputs(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's outputs for x (the independent oracle)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_fidelity_reward_in_every_mode(tmp_path: Path) -> None:
    """The fidelity reward on a model with three outputs (logits, a dense map, an embedding): slice, mask and prune modes
    score a plan alike, without BN re-calibration exactly what ONNX Runtime gives the surgery's file; the
    unpruned plan scores 1; no labels are needed."""
    from agmc_onnx.evaluate import fidelity_onnx, reference_fidelity
    from agmc_onnx.plan import full_plan
    from fixtures.multi_output import with_dense_outputs

    model = with_dense_outputs(DATA.parents[0] / "models" / "resnet20.onnx", tmp_path / "r20d.onnx")
    a = analyze(model)
    train = load_dataset(DATA, "train", Preprocess.for_model(a.model.proto)).without_labels()
    split = reward_split(train.subset(np.arange(600)), 96, 0)
    reward, calib = split.reward, split.rest.subset(np.arange(64))
    env = PruningEnv.from_analysis(a, 0.5, 1, 0.2)
    plan = _random_plan(a, env, np.random.default_rng(4))
    raw = {mode: Evaluator(a, reward, calib, bn_recalibrate=False, device="cpu", threads=1, mode=mode,
                           reward_kind="fidelity") for mode in ("auto", "mask", "prune")}  # fmt: skip
    assert raw["auto"].mode == "slice" and [s.kind for s in raw["auto"].fidelity.specs] == ["logits", "dense", "embedding"]
    scores = {mode: ev.score(plan) for mode, ev in raw.items()}
    truth = fidelity_onnx(prune(a, plan), reward, reference_fidelity(a.model.proto, reward))
    assert 0.05 < truth < 0.99
    for mode, got in scores.items():
        assert abs(got - truth) < 1e-3, (mode, got, truth)
    assert raw["auto"].score(full_plan(a)) == pytest.approx(1.0, abs=1e-6)
    recal = {mode: Evaluator(a, reward, calib, device="cpu", threads=1, mode=mode, reward_kind="fidelity")
             for mode in ("auto", "prune")}  # fmt: skip
    assert abs(recal["auto"].score(plan) - recal["prune"].score(plan)) < 1e-3
    with pytest.raises(InputError, match="needs labels"):
        Evaluator(a, reward, calib, device="cpu", reward_kind="accuracy")


def test_onnx_scoring_of_a_static_batch_model(tmp_path: Path) -> None:
    """A model whose input fixes the batch to 1 is run one example at a time: outputs and fidelity of all of them."""
    from agmc_onnx.evaluate import fidelity_onnx, onnx_outputs, reference_fidelity
    from tests.data.writers import tiny_model

    model = tiny_model(tmp_path / "static.onnx", [1, 3, 4, 4])
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    data = SimpleNamespace(x=x, y=None)
    np.testing.assert_array_equal(onnx_outputs(model, data)[0], x)
    assert fidelity_onnx(model, data, reference_fidelity(model, data)) == pytest.approx(1.0)
