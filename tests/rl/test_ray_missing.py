"""Without the ray extra, asking for workers fails at once (exit 2) with one line naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.rl.recording import DATA, fixture_net


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError


def test_cli_workers_without_ray_exits_2_naming_the_extra(no_ray: None, tmp_path: Path) -> None:
    from agmc_onnx.cli import main

    net = fixture_net(tmp_path)
    args = ["prune", str(net), "--target-flops", "0.5", "--data", str(DATA), "--workers", "2", "-o", str(tmp_path / "o.onnx")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines == ["agmc-onnx: error: --workers 2 needs Ray, which is not installed: pip install 'agmc-onnx[cpu,ray]'"]
    assert not (tmp_path / "o.onnx").exists()


def test_api_workers_without_ray_is_an_input_error(no_ray: None, tmp_path: Path) -> None:
    from agmc_onnx.api import search_prune
    from agmc_onnx.errors import InputError

    with pytest.raises(InputError, match=r"agmc-onnx\[cpu,ray\]"):
        search_prune(fixture_net(tmp_path), 0.5, "random", data=DATA, episodes=2, workers=3)


def test_one_worker_needs_no_ray(no_ray: None) -> None:
    """--workers 1 (the default) scores in this process: no Ray import anywhere on that path."""
    from agmc_onnx.rl.workers import ScorerPool

    with pytest.raises(ImportError):
        import ray  # noqa: F401
    with pytest.raises(Exception, match="needs Ray"):
        ScorerPool(lambda **_: None, 2)  # type: ignore[arg-type,return-value]
