"""End-to-end searches on a tiny fixture net with the shipped data: every strategy, resume, seeds, policies."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from agmc_onnx.api import SearchData, analyze, load_search_data, search_prune
from agmc_onnx.evaluate import Evaluator, evaluate_onnx
from agmc_onnx.rl.search import Episode
from agmc_onnx.surgery import prune

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine's Flatten->Gemm fixture (1x28x28, BN kept): Fashion-MNIST shaped, tiny."""
    from fixtures.engine_nets import export_net

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return export_net("flatten_gemm", tmp_path_factory.mktemp("search"), "bn")


@pytest.fixture(scope="module")
def data(net: Path) -> SearchData:
    sd = load_search_data(analyze(net).model, DATA, reward_images=200)
    sd.calibration = sd.calibration.subset(np.arange(128))
    sd.test = sd.test.subset(np.arange(300))
    return sd


def run(net: Path, data: SearchData, strategy: str, tmp: Path, **kw: object):  # noqa: ANN201
    tmp.mkdir(parents=True, exist_ok=True)
    kw.setdefault("episodes", 6)
    kw.setdefault("warmup", 2)
    return search_prune(net, 0.5, strategy, data=data, round_to=1, output=tmp / "out.onnx",
                        report=tmp / "report.json", device="cpu", threads=1, **kw)  # fmt: skip


@pytest.mark.parametrize(("strategy", "agent"), [("agmc", "ddpg"), ("amc", "ddpg"), ("random", "ddpg"), ("agmc", "ppo")])
def test_every_search_strategy_end_to_end(strategy: str, agent: str, net: Path, data: SearchData, tmp_path: Path) -> None:
    r = run(net, data, strategy, tmp_path, agent=agent)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["macs_ratio"] <= 0.5 + 1e-9 and rep["after"]["macs"] == rep["after"]["macs_predicted"]
    s = rep["search"]
    assert s["strategy"] == strategy and s["episodes"] == 6 and len(s["curve"]) == 6
    assert s["agent"] == (None if strategy == "random" else agent)
    assert s["best_reward"] == max(e["reward"] for e in s["curve"]) and s["bn_recalibrated"]
    assert all(e["macs_ratio"] <= 0.5 + 1e-9 for e in s["curve"])
    assert set(rep["accuracy"]) == {"reward_split", "test"} and rep["accuracy"]["test"]["pruned"] is not None
    assert (tmp_path / "report.png").stat().st_size > 1000 and (tmp_path / "out.onnx").exists()
    assert r.prune.plan.keep_counts() == {int(g): c for g, c in s["best_counts"].items()}
    # the written file is what was scored: BN re-calibrated the same way, within one reward sample
    assert rep["bn_recalibration"]["written"]
    assert abs(rep["accuracy"]["reward_split"]["pruned"] - s["best_reward"]) <= 1 / len(data.reward) + 1e-9


@pytest.mark.parametrize("strategy", ["uniform", "l1-global"])
def test_rule_strategies_with_data_write_recalibrated_bn(strategy: str, net: Path, data: SearchData, tmp_path: Path) -> None:
    from onnx import numpy_helper

    from agmc_onnx.bn import bn_nodes

    r = run(net, data, strategy, tmp_path / "bn")
    raw = run(net, data, strategy, tmp_path / "raw", bn_recalibrate=False)
    assert r.search is None and r.report["bn_recalibration"]["written"]
    assert not raw.report["bn_recalibration"]["written"]
    a = analyze(net)
    scored = Evaluator(a, data.reward, data.calibration, device="cpu", threads=1).score(r.prune.plan)
    assert abs(r.report["accuracy"]["reward_split"]["pruned"] - scored) <= 1 / len(data.reward) + 1e-9
    assert abs(evaluate_onnx(tmp_path / "bn" / "out.onnx", data.reward) - scored) <= 1 / len(data.reward) + 1e-9

    def stats(proto: object) -> list[np.ndarray]:
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}  # type: ignore[attr-defined]
        return [inits[n.input[3]] for n in bn_nodes(proto)]  # type: ignore[arg-type]

    assert any(not np.array_equal(x, y) for x, y in zip(stats(r.prune.proto), stats(raw.prune.proto), strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(stats(raw.prune.proto), stats(prune(a, raw.prune.plan)), strict=True))


@pytest.mark.parametrize(("agent", "stop"), [("ddpg", 3), ("ppo", 4)])
def test_same_seed_same_plan_and_resume_equals_uninterrupted(agent: str, stop: int, net: Path, data: SearchData,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """PPO stops mid-batch (episodes 2-4 explored, the update due after 5): its pending episodes are checkpointed."""
    full = run(net, data, "agmc", tmp_path / "a", episodes=8, seed=5, agent=agent, options={"episodes_per_update": 4})
    again = run(net, data, "agmc", tmp_path / "b", episodes=8, seed=5, agent=agent, options={"episodes_per_update": 4})
    assert [e.reward for e in again.search.curve] == [e.reward for e in full.search.curve]
    assert again.search.best_counts == full.search.best_counts

    def stop_after(e: Episode) -> None:
        if e.episode == stop:
            raise KeyboardInterrupt

    cut = run(net, data, "agmc", tmp_path / "c", episodes=8, seed=5, progress=stop_after, agent=agent, options={"episodes_per_update": 4})
    assert cut.search.interrupted and len(cut.search.curve) == stop + 1
    assert (tmp_path / "c" / "out.onnx").exists()  # Ctrl-C still writes the best plan so far
    resumed = run(net, data, "agmc", tmp_path / "c", episodes=8, seed=5, resume=True, agent=agent, options={"episodes_per_update": 4})
    assert resumed.search.resumed_from == stop + 1
    assert [e.ratios for e in resumed.search.curve] == [e.ratios for e in full.search.curve]
    assert resumed.search.best_counts == full.search.best_counts


def test_policy_saved_and_reused_zero_shot_and_warm(net: Path, data: SearchData, tmp_path: Path) -> None:
    pol = tmp_path / "policy.pt"
    run(net, data, "agmc", tmp_path / "train", save_policy=pol)
    zero = run(net, data, "agmc", tmp_path / "zero", episodes=0, policy=pol)
    assert len(zero.search.curve) == 1 and zero.search.curve[0].kind == "greedy"
    warm = run(net, data, "agmc", tmp_path / "warm", episodes=3, policy=pol, warmup=None)
    assert [e.kind for e in warm.search.curve] == ["explore"] * 3
    from agmc_onnx.errors import InputError

    with pytest.raises(InputError, match="saved by strategy 'agmc'"):
        run(net, data, "amc", tmp_path / "amc", episodes=1, policy=pol)
    with pytest.raises(InputError, match="saved by agent 'ddpg'"):
        run(net, data, "agmc", tmp_path / "ppo", episodes=1, policy=pol, agent="ppo")


def test_cli_prune_with_search_options(net: Path, tmp_path: Path) -> None:
    from agmc_onnx.cli import main

    out, rep = tmp_path / "p.onnx", tmp_path / "p.json"
    args = ["prune", str(net), "--target-flops", "0.5", "--data", str(DATA), "--episodes", "2", "--round-to", "1",
            "--reward-images", "100", "--no-bn-recalibrate", "-o", str(out), "--report", str(rep)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    assert report["strategy"] == "agmc" and report["search"]["bn_recalibrated"] is False
    assert (tmp_path / "p.onnx.search" / "search.pt").exists()
    # not a terminal (a CI log): plain progress lines instead of a live bar, the last one at the last episode
    assert "agmc: episode 2/2  reward" in res.output
    bad = CliRunner().invoke(main, ["prune", str(net), "--target-flops", "0.5", "--strategy", "amc", "-o", str(tmp_path / "q.onnx")])
    assert bad.exit_code == 2 and "--data" in bad.output


@pytest.mark.parametrize("encoder", ["auto", "trained"])
def test_agmc_gnn_stays_as_built_unless_trained_is_asked(encoder: str, net: Path, data: SearchData, tmp_path: Path) -> None:
    """Issue 19: by default (auto, per-group decoder) the GNN keeps the weights the seed gave it and only the
    agent learns; encoder="trained" moves it with the actor (the paper). The report says which."""
    import torch

    from agmc_onnx.rl.runner import build_agent

    pol, opts = tmp_path / "policy.pt", {"batch": 8, "critic_warmup": 10}
    run(net, data, "agmc", tmp_path, episodes=10, warmup=3, seed=3, encoder=encoder, save_policy=pol, options=opts)
    saved = torch.load(pol, weights_only=False)["source"]
    built = build_agent("agmc", analyze(net), 1, 3, {"encoder": encoder, **opts}).source.state_dict()
    assert saved and set(saved) <= set(built)
    assert all(torch.equal(saved[k], built[k]) for k in saved) == (encoder == "auto")
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["search"]["encoder"] == ("frozen" if encoder == "auto" else "trained")


def test_a_checkpoint_of_the_other_encoder_is_refused(net: Path, data: SearchData, tmp_path: Path) -> None:
    from agmc_onnx.errors import InputError

    run(net, data, "agmc", tmp_path, episodes=3, encoder="trained")
    with pytest.raises(InputError, match="belongs to another search"):
        run(net, data, "agmc", tmp_path, episodes=4, encoder="frozen", resume=True)
    assert run(net, data, "agmc", tmp_path, episodes=4, encoder="trained", resume=True).search.curve[-1].episode == 3


def test_the_default_encoder_is_the_benchmarks_agmc_frozen(net: Path, data: SearchData, tmp_path: Path) -> None:
    """The default agmc search is the one benchmarks/search.py ran as `agmc-frozen` (lr_encoder 0): the same
    curve and, bit for bit, the same learned actor and critic; the trained GNN's search ends elsewhere."""
    import torch

    def search(name: str, **kw: Any) -> tuple[list[float], dict[str, Any]]:
        pol = tmp_path / f"{name}.pt"
        res = run(net, data, "agmc", tmp_path / name, episodes=10, warmup=3, seed=1, save_policy=pol, **kw)
        return [e.reward for e in res.search.curve], torch.load(pol, weights_only=False)

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return all(torch.equal(a[part][k], b[part][k]) for part in ("source", "actor", "critic") for k in a[part])

    opts = {"batch": 8, "critic_warmup": 10}
    default, frozen = search("default", options=opts), search("frozen", encoder="trained", options={**opts, "lr_encoder": 0.0})
    trained = search("trained", encoder="trained", options=opts)
    assert default[0] == frozen[0] and same(default[1], frozen[1])
    assert not same(default[1], trained[1])


def test_a_checkpoint_from_before_the_encoder_choice_resumes_as_trained(net: Path, data: SearchData, tmp_path: Path) -> None:
    import torch

    from agmc_onnx.errors import InputError
    from agmc_onnx.rl.search import CHECKPOINT

    run(net, data, "agmc", tmp_path, episodes=3, encoder="trained")
    path = tmp_path / "out.onnx.search" / CHECKPOINT
    state = torch.load(path, weights_only=False)
    del state["fingerprint"]["encoder"]  # what an older agmc-onnx wrote
    torch.save(state, path)
    with pytest.raises(InputError, match="belongs to another search"):
        run(net, data, "agmc", tmp_path, episodes=4, resume=True)  # today's default: frozen
    assert run(net, data, "agmc", tmp_path, episodes=4, encoder="trained", resume=True).search.curve[-1].episode == 3
