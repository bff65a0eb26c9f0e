"""Run reports (one JSON + one markdown per prune/finetune run) and the CI gates evaluated on them."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx import __version__
from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.io import write_text

# Float slack for gate comparisons (0.92 - 0.91 is 1.0000000000000009 points).
_EPS = 1e-9

# Order in which a run's models are listed; the last one present is the run's result.
STAGES = ("original", "pruned", "finetuned")


class GateError(AgmcError):
    """A CI gate was not met: exit code 1, one line naming every failed gate."""

    exit_code = 1


@dataclass
class Gates:
    """CI thresholds; None = not checked. Accuracies in percent, drops in percentage points."""

    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    min_speedup: float | None = None
    max_latency_ms: float | None = None
    min_fidelity: float | None = None  # percent: the result's fidelity to the original (data without labels too)

    def __post_init__(self) -> None:
        """Reject values that cannot be meant (negative, or a fraction given for a percentage)."""
        for name, value in asdict(self).items():
            if value is not None and value < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative, got {value}")
        if self.min_accuracy is not None and (self.min_accuracy > 100 or 0 < self.min_accuracy <= 1):
            raise InputError(
                f"--min-accuracy is a percentage in (1, 100] (e.g. 91.5), got {self.min_accuracy}"
            )
        if self.min_fidelity is not None and (self.min_fidelity > 100 or 0 < self.min_fidelity <= 1):
            raise InputError(
                f"--min-fidelity is a percentage in (1, 100] (e.g. 97), got {self.min_fidelity}"
            )
        if self.min_speedup is not None and self.min_speedup == 0:
            raise InputError("--min-speedup must be positive")
        if self.max_latency_ms is not None and self.max_latency_ms == 0:
            raise InputError("--max-latency-ms must be positive")

    def active(self) -> dict[str, float]:
        """The gates that are set, by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def final_stage(report: Mapping[str, Any]) -> str:
    """The last model stage the report holds (finetuned > pruned > original)."""
    present = [s for s in STAGES if s in report.get("models", {})]
    if not present:
        raise ValueError("report lists no models")
    return present[-1]


def _accuracy(report: Mapping[str, Any], stage: str) -> float | None:
    """Test accuracy (fraction) of a stage, or None."""
    acc = report.get("models", {}).get(stage, {}).get("accuracy")
    return None if acc is None else float(acc)


def check_gates(report: Mapping[str, Any], gates: Gates) -> list[str]:
    """The failed gates, one line each; a gate whose figure was not measured fails, saying so."""
    failed: list[str] = []
    final = final_stage(report)
    acc = _accuracy(report, final)
    base = _accuracy(report, "original")
    had_data = report.get("models", {}).get(final, {}).get("fidelity") is not None
    no_labels = "the data has no labels: gate on --min-fidelity" if had_data else "give --data"
    if gates.min_accuracy is not None:
        if acc is None:
            failed.append(f"min-accuracy: no {final} test accuracy was measured ({no_labels})")
        elif 100 * acc < gates.min_accuracy - _EPS:
            failed.append(f"min-accuracy: {final} accuracy {100 * acc:.2f}% < {gates.min_accuracy:g}%")
    if gates.max_accuracy_drop is not None:
        if acc is None or base is None:
            failed.append(
                f"max-accuracy-drop: original and final test accuracies are both needed ({no_labels})"
            )
        else:
            drop = 100 * (base - acc)
            if drop > gates.max_accuracy_drop + _EPS:
                failed.append(
                    f"max-accuracy-drop: accuracy fell {drop:.2f} points ({100 * base:.2f}% -> {100 * acc:.2f}%)"
                    f" > {gates.max_accuracy_drop:g}"
                )
    if gates.min_fidelity is not None:
        fid = report.get("models", {}).get(final, {}).get("fidelity")
        if fid is None:
            failed.append(f"min-fidelity: no {final} fidelity to the original was measured (give --data)")
        elif 100 * fid < gates.min_fidelity - _EPS:
            failed.append(f"min-fidelity: {final} fidelity {100 * fid:.2f}% < {gates.min_fidelity:g}%")
    latency = report.get("latency") or {}
    rows = [r for r in latency.get("results", []) if r.get("model") == final]
    if gates.min_speedup is not None:
        if not rows or final == "original" or latency.get("baseline") != "original":
            failed.append("min-speedup: no latency of the original and the result was measured in one run")
        for r in rows if final != "original" else []:
            if r["speedup"] < gates.min_speedup - _EPS:
                failed.append(
                    f"min-speedup: {r['speedup']:.2f}x at batch {r['batch']} < {gates.min_speedup:g}x"
                )
    if gates.max_latency_ms is not None:
        if not rows:
            failed.append(f"max-latency-ms: no latency of the {final} model was measured")
        for r in rows:
            if r["median_ms"] > gates.max_latency_ms + _EPS:
                failed.append(
                    f"max-latency-ms: median {r['median_ms']:.3f} ms at batch {r['batch']} > {gates.max_latency_ms:g} ms"
                )
    return failed


def enforce(report: Mapping[str, Any]) -> None:
    """Raise GateError (exit 1) with one line when the report's gates failed."""
    failed = report.get("gates", {}).get("failed", [])
    if failed:
        raise GateError("gate failed: " + "; ".join(failed))


def versions() -> dict[str, str | None]:
    """Versions of agmc-onnx, onnx, onnxruntime, torch and Python."""
    out: dict[str, str | None] = {"agmc-onnx": __version__, "onnx": onnx.__version__}
    for name in ("onnxruntime", "torch"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, program shown as `agmc-onnx`."""
    args = list(sys.argv if argv is None else argv)
    if args and Path(args[0]).name in ("agmc-onnx", "cli.py", "__main__.py", "pytest"):
        args[0] = "agmc-onnx"
    return shlex.join(args)


def model_facts(model: str | Path | onnx.ModelProto, accuracy: float | None = None, input_shapes: Any = None,
                counts: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """MACs and params, its size, path and test accuracy (fraction). `counts` (MACs, params) when the run has
    counted them already; else the model is normalised as `load` does and counted at `input_shapes` (so every
    model of a report is counted the same way: one counter over normalised graphs)."""
    path = None
    if isinstance(model, onnx.ModelProto):
        proto = model
        size = proto.ByteSize()
    else:
        path = str(model)
        proto = onnx.load(path)
        size = os.path.getsize(path)
    if counts is None:
        from agmc_onnx.cost import count_macs, count_params
        from agmc_onnx.inputs import as_input_shapes
        from agmc_onnx.model import normalise

        sizes = as_input_shapes(proto, input_shapes, path)
        norm = normalise(proto)
        counts = (count_macs(norm, sizes), count_params(norm))
    return {
        "path": path,
        "macs": int(counts[0]),
        "params": int(counts[1]),
        "file_bytes": int(size),
        "accuracy": None if accuracy is None else float(accuracy),
    }


def build(
    kind: str,
    models: Mapping[str, Mapping[str, Any]],
    *,
    latency: Mapping[str, Any] | None = None,
    gates: Gates | None = None,
    command: str | None = None,
    warnings: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a run report (`models` keyed by stage), derive ratios and evaluate the gates."""
    unknown = set(models) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; use {STAGES}")
    ordered = {s: dict(models[s]) for s in STAGES if s in models}
    report: dict[str, Any] = {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
        "versions": versions(),
        "models": ordered,
        "latency": dict(latency) if latency else None,
        "warnings": list(warnings),
    }
    final = final_stage(report)
    orig = ordered.get("original", {})
    if final != "original" and orig:
        fin = ordered[final]
        report["macs_ratio"] = fin["macs"] / orig["macs"] if orig.get("macs") else None
        report["params_ratio"] = fin["params"] / orig["params"] if orig.get("params") else None
        acc, base = fin.get("accuracy"), orig.get("accuracy")
        report["accuracy_drop_points"] = None if acc is None or base is None else 100 * (base - acc)
    if latency:
        report["speedup"] = {
            str(r["batch"]): r["speedup"] for r in latency.get("results", []) if r.get("model") == final
        }
    if extra:
        report.update(extra)
    gates = gates or Gates()
    report["gates"] = {
        "thresholds": gates.active(),
        "failed": check_gates(report, gates) if gates.active() else [],
    }
    report["gates"]["passed"] = not report["gates"]["failed"]
    return report


def _pct(acc: float | None) -> str:
    """A fraction as a percentage, or a dash."""
    return "-" if acc is None else f"{100 * acc:.2f}%"


def render_markdown(report: Mapping[str, Any]) -> str:
    """A short markdown summary of a run report."""
    lines = [f"# agmc-onnx {report['kind']} report", "", f"`{report['command']}`", ""]
    fid = any(m.get("fidelity") is not None for m in report["models"].values())
    lines += [f"| model | accuracy |{' fidelity |' if fid else ''} MACs | params | file size | path |",
              f"|---|---:|{'---:|' if fid else ''}---:|---:|---:|---|"]  # fmt: skip
    for stage, m in report["models"].items():
        fid_cell = f" {_pct(m.get('fidelity'))} |" if fid else ""
        lines.append(
            f"| {stage} | {_pct(m.get('accuracy'))} |{fid_cell} {m['macs']:,} | {m['params']:,} | "
            f"{m['file_bytes'] / 1024:.1f} KiB | {m.get('path') or '-'} |"
        )
    lines.append("")
    kept = [f"{what} kept: {100 * report[key]:.1f}%" for what, key in (("MACs", "macs_ratio"), ("params", "params_ratio"))
            if report.get(key) is not None]  # fmt: skip
    if kept:
        lines.append("; ".join(kept))
    if report.get("accuracy_drop_points") is not None:
        lines.append(f"Accuracy drop: {report['accuracy_drop_points']:.2f} points")
    if fid:
        lines.append("Fidelity: how closely a model's outputs reproduce the original's on the same inputs "
                     "(1 = identical; agmc_onnx.fidelity).")
    lat = report.get("latency")
    if lat:
        lines += [
            "",
            f"## Latency (ONNX Runtime {lat['provider']}, threads={lat['threads'] or 'default'}, "
            f"{lat['repeats']} interleaved runs after {lat['warmup']} warm-up)",
            "",
            "| model | batch | median ms | p90 ms | speed-up |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in lat["results"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['speedup']:.2f}x |"
            )
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    gates = report.get("gates", {})
    if gates.get("thresholds"):
        lines += ["", "## Gates", ""]
        lines += [f"- {k.replace('_', '-')}: {v:g}" for k, v in gates["thresholds"].items()]
        lines.append("")
        lines += [f"- FAILED {f}" for f in gates["failed"]] or ["All gates passed."]
    v = report["versions"]
    lines += ["", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)


def markdown_path(json_path: str | Path) -> Path:
    """R.json -> R.md beside it."""
    p = Path(json_path)
    return p.with_suffix(".md") if p.suffix == ".json" else p.with_name(p.name + ".md")


def write(report: Mapping[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """Write the JSON report and its markdown summary beside it; returns both paths."""
    jp = Path(json_path)
    mp = markdown_path(jp)
    write_text(json.dumps(report, indent=2, default=str) + "\n", jp)
    write_text(render_markdown(report), mp)
    return jp, mp


def shortfall_warning(
    speedup: float, macs_ratio: float, batch: int, costly: Sequence[tuple[str, str, float]] = ()
) -> str | None:
    """A warning when the measured speed-up is well short of 1/macs_ratio, naming the costliest layers.

    `costly` holds (node, op, share of time) of the pruned model, most costly first.
    """
    from agmc_onnx.bench import speedup_shortfall

    if not speedup_shortfall(speedup, macs_ratio):
        return None
    top = ", ".join(f"{n} ({op}, {100 * s:.0f}%)" for n, op, s in costly[:3])
    msg = (
        f"measured speed-up {speedup:.2f}x at batch {batch} is well short of the {1 / macs_ratio:.2f}x "
        f"the MACs reduction promises (widths that do not match the kernels' blocking are a common cause; "
        f"try --round-to 16)"
    )
    return msg + (f"; most costly layers: {top}" if top else "")


def latency_warnings(
    report: Mapping[str, Any],
    final_model: str | Path | onnx.ModelProto,
    provider: str = "cpu",
    threads: int | None = None,
    input_shapes: Any = None,
) -> list[str]:
    """Warnings for every batch whose measured speed-up falls well short of the MACs reduction.

    The final model is profiled (once, at the first short batch) to name the layers that cost most.
    """
    ratio = report.get("macs_ratio")
    latency = report.get("latency") or {}
    if not ratio or latency.get("baseline") != "original":
        return []
    final = final_stage(report)
    out: list[str] = []
    costly: list[tuple[str, str, float]] | None = None
    for row in latency.get("results", []):
        if row.get("model") != final:
            continue
        if costly is None and _short(row["speedup"], ratio):
            from agmc_onnx.bench import profile

            costly = [(c.node, c.op, c.share) for c in profile(final_model, row["batch"], provider, threads,
                                                               input_shapes=input_shapes)]  # fmt: skip
        msg = shortfall_warning(row["speedup"], ratio, row["batch"], costly or [])
        if msg:
            out.append(msg)
    return out


def _short(speedup: float, macs_ratio: float) -> bool:
    """bench.speedup_shortfall, imported lazily."""
    from agmc_onnx.bench import speedup_shortfall

    return speedup_shortfall(speedup, macs_ratio)
