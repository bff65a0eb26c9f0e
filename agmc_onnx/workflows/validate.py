"""The one validation step of each command: every flag, path and input checked before any work, torch-free.

Cheapest first: flag values and contradictions, then paths (every output writable, none an input or
another output), then the inputs (plan JSON, policy and checkpoint files, the model file with its weights,
the data with its labels against the model's classes), and last, when the run will use ONNX Runtime,
one session and one batch-1 run of each input model. Each failure is an InputError (exit 2) naming the
flag or file and the cause. What passes comes back as a request the workflow runs as it is.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from agmc_onnx.budget import check_latency, check_speedup, check_target
from agmc_onnx.data import find_sidecar, sidecar_path
from agmc_onnx.errors import AgmcError, InputError
from agmc_onnx.io import Input, Output, check_outputs
from agmc_onnx.model import ModelGraph
from agmc_onnx.model import load as load_model
from agmc_onnx.modelfile import image_inputs, read_model_file
from agmc_onnx.plan import parse_round_to
from agmc_onnx.report import Gates, markdown_path
from agmc_onnx.rl import ENCODERS
from agmc_onnx.strategies import REGISTRY, SEARCH_STRATEGIES
from agmc_onnx.workflows.audit import default_output
from agmc_onnx.workflows.context import RunContext, build_context
from agmc_onnx.workflows.options import PruneOptions

PathLike = str | os.PathLike[str]
CHECKPOINT_FILE = "search.pt"  # agmc_onnx.rl.search.CHECKPOINT (that module imports torch)
AGENT_STRATEGIES = ("agmc", "amc")  # the searches that train an agent, so read and write policies


@dataclass
class PruneRequest:
    """A checked `prune` run: the strategy it uses, its context (model and data read once), where it writes."""

    strategy: str
    context: RunContext
    output: Path
    report: Path
    staged: list[Path]  # every file the run writes, committed together at its end
    bench: bool  # the run measures latency in ONNX Runtime (--bench, or a latency budget)


@dataclass
class FinetuneRequest:
    """A checked `finetune` run: its context (model, data with a test split) and where it writes."""

    context: RunContext
    output: Path
    report: Path
    staged: list[Path]


@dataclass
class BenchRequest:
    """Checked `bench` models: each read once (protos) with its label (the file name)."""

    protos: list[onnx.ModelProto]
    labels: list[str]
    paths: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- commands

def validate_inspect(model: PathLike, input_shapes: Any = None) -> ModelGraph:
    """`inspect`: the model file read, checked (weights included) and normalised, at `input_shapes`."""
    return load_model(model, input_shapes=input_shapes)


def validate_bench(models: Sequence[PathLike], provider: str = "cpu", threads: int | None = None,
                   input_shapes: Any = None) -> BenchRequest:  # fmt: skip
    """`bench`: every model readable, consistent, with fixed shapes but the batch (or --input-shape sizes), and
    runnable in ONNX Runtime."""
    protos = [read_model_file(m) for m in models]
    for proto, path in zip(protos, models, strict=True):
        probe_runtime(proto, path, provider, threads, need_static=True, input_shapes=input_shapes)
    return BenchRequest(protos, [Path(m).name for m in models], [Path(m) for m in models])


def validate_prune(model: PathLike, opts: PruneOptions) -> PruneRequest:
    """`prune`: flags, their contradictions, paths, plan/policy/checkpoint files, model, data, runtime."""
    strategy = opts.chosen_strategy()
    if strategy not in REGISTRY:
        raise InputError(f"unknown strategy {strategy!r} (choose from {', '.join(sorted(REGISTRY))})")
    if opts.target_latency_ms is not None:
        check_latency(opts.target_latency_ms)
    if opts.target_speedup is not None:
        check_speedup(opts.target_speedup)
    by_latency = opts.target_latency_ms is not None or opts.target_speedup is not None
    if strategy != "plan" and (opts.target_flops is not None or not by_latency):
        check_target(opts.target_flops)
    parse_round_to(opts.round_to)
    bench = opts.bench or by_latency
    _prune_rules(opts, strategy, bench)
    searching = strategy in SEARCH_STRATEGIES
    if searching and opts.data is not None and (opts.workers > 1 or opts.ray_address):
        from agmc_onnx.rl.workers import require_ray

        require_ray(opts.workers)  # the ray extra, named, before the data is read
    out = Path(opts.output or default_output(model))
    report = Path(opts.report) if opts.report else out.with_name(out.name.removesuffix(".onnx") + ".report.json")
    files = [Output("-o", out), Output("--report", report), Output("--report's markdown", markdown_path(report))]
    if searching:
        files.append(Output("--report's plot", report.with_suffix(".png")))
    if find_sidecar(model) is not None:
        files.append(Output("-o's preprocessing sidecar", sidecar_path(out)))
    if opts.save_policy:
        files.append(Output("--save-policy", Path(opts.save_policy)))
    folders = []
    checkpoint = Path(opts.checkpoint) if opts.checkpoint else Path(str(out) + ".search")
    if searching:
        folders.append(Output("--checkpoint", checkpoint, directory=True))
    if by_latency:
        folders.append(_latency_cache(opts.latency_cache))
    inputs = _inputs(model, data=opts.data, plan=opts.plan, policy=opts.policy, sidecar=opts.sidecar)
    check_outputs([*files, *folders], inputs)
    if opts.plan is not None:
        from agmc_onnx.strategies.plan_file import read_plan_file

        read_plan_file(opts.plan)
    if opts.policy is not None:
        check_torch_file(opts.policy, "--policy", "policy file")
    if opts.resume and (checkpoint / CHECKPOINT_FILE).is_file():
        check_torch_file(checkpoint / CHECKPOINT_FILE, "--resume", "search checkpoint")
    graph = load_model(model, input_shapes=opts.input_shapes)
    if opts.data is not None:
        check_image_input(graph.source or graph.proto, model)
    ctx = build_context(graph, opts.data, seed=opts.seed, sidecar=opts.sidecar, flags=opts.preprocess)
    needs_test = [f"--{k.replace('_', '-')}" for k in ("min_accuracy", "max_accuracy_drop")
                  if getattr(opts.gates, k) is not None]  # fmt: skip
    if opts.data is not None and ctx.test is None and needs_test:
        raise InputError(f"{needs_test[0]} needs test accuracy, but the data has no test split", opts.data)
    if opts.data is not None and len(ctx.train or ()) < 2:
        raise InputError("the train split needs at least 2 examples (a reward split and the rest)", opts.data)
    if opts.data is not None or bench:
        hint = "" if opts.data is not None else "; --no-bench prunes without timing it"
        probe_runtime(ctx.model.source or ctx.model.proto, model, opts.provider, opts.threads, need_static=bench,
                      hint=hint, input_shapes=ctx.input_shapes)  # fmt: skip
    return PruneRequest(strategy, ctx, out, report, [f.path for f in files], bench)


def validate_finetune(model: PathLike, data: PathLike, *, output: PathLike, report_path: PathLike | None = None,
                      distill: PathLike | None = None, original: PathLike | None = None, held_out: int | None = None,
                      do_bench: bool = True, provider: str = "cpu", threads: int | None = None,
                      gates: Gates | None = None, preprocess: dict[str, Any] | None = None,
                      sidecar: PathLike | None = None, seed: int = 0, input_shapes: Any = None,
                      feature_points: int = 0) -> FinetuneRequest:  # fmt: skip
    """`finetune`: gate contradictions, paths, the model and its teacher/baseline, the data (test split and
    labels), --held-out against the training examples, runtime."""
    gates = gates or Gates()
    baseline = original or distill
    for name in ("min_speedup", "max_latency_ms"):
        if getattr(gates, name) is not None and not do_bench:
            raise InputError(f"--{name.replace('_', '-')} needs a latency measurement, which --no-bench turns off")
    for name in ("min_speedup", "max_accuracy_drop"):
        if getattr(gates, name) is not None and baseline is None:
            raise InputError(f"--{name.replace('_', '-')} compares with the unpruned model: give --original "
                             "(or --distill)")  # fmt: skip
    out = Path(output)
    report = Path(report_path) if report_path else out.with_name(out.name.removesuffix(".onnx") + ".report.json")
    files = [Output("-o", out), Output("--report", report), Output("--report's markdown", markdown_path(report))]
    if find_sidecar(model) is not None:
        files.append(Output("-o's preprocessing sidecar", sidecar_path(out)))
    inputs = _inputs(model, data=data, sidecar=sidecar)
    inputs += [Input(flag, Path(p)) for flag, p in (("--distill teacher", distill), ("--original", original)) if p]
    check_outputs(files, inputs)
    graph = load_model(model, input_shapes=input_shapes)
    others = [(p, read_model_file(p)) for p in (distill, original) if p is not None]  # each evaluated on the data
    for p, proto in [(model, graph.source or graph.proto), *others]:
        check_image_input(proto, p)
    ctx = build_context(graph, data, need_test=True, seed=seed, sidecar=sidecar, flags=preprocess)
    if not ctx.labelled and baseline is None:
        raise InputError("the data has no labels: fine-tuning distils from the original model; give it with "
                         "--distill ORIGINAL.onnx", data)  # fmt: skip
    if feature_points and (distill if ctx.labelled else baseline) is None:
        raise InputError("--distill-features matches the original's feature maps: give it with --distill ORIGINAL.onnx")
    n = len(ctx.train or ())
    if held_out is not None and not 0 < held_out < n:
        raise InputError(f"--held-out {held_out} is out of range: it must be below the {n} training examples "
                         f"of {data}, the rest trains")
    if n < 2:
        raise InputError(f"the train split has {n} example(s): fine-tuning needs some to train and some held out", data)
    probe_runtime(ctx.model.source or ctx.model.proto, model, provider, threads, need_static=do_bench,
                  input_shapes=ctx.input_shapes)
    for p, proto in others:
        probe_runtime(proto, p, provider, threads, need_static=do_bench, input_shapes=ctx.input_shapes)
    return FinetuneRequest(ctx, out, report, [f.path for f in files])


# ----------------------------------------------------------------------------------------------- rules and checks

def _prune_rules(opts: PruneOptions, strategy: str, bench: bool) -> None:
    """Flags that contradict each other or need another: each refused naming the flag."""
    data = opts.data is not None
    rules = [
        (opts.finetune_epochs and not data, "--finetune-epochs needs --data (training images)"),
        (opts.gates.min_accuracy is not None and not data,
         "--min-accuracy needs --data (a test split to measure the accuracy on)"),
        (opts.gates.max_accuracy_drop is not None and not data,
         "--max-accuracy-drop needs --data (a test split to measure both accuracies on)"),
        (opts.gates.min_speedup is not None and not bench,
         "--min-speedup needs the latency measurement, which --no-bench turns off"),
        (opts.gates.max_latency_ms is not None and not bench,
         "--max-latency-ms needs the latency measurement, which --no-bench turns off"),
        (opts.distill and not opts.finetune_epochs,
         "--distill distils while fine-tuning: it needs --finetune-epochs N (and --data)"),
        (opts.recipe.get("feature_points") and not opts.finetune_epochs,
         "--distill-features distils while fine-tuning: it needs --finetune-epochs N (and --data)"),
        (strategy in SEARCH_STRATEGIES and not data, f"--strategy {strategy} scores candidates on data: give --data DIR"),
        (opts.encoder not in ENCODERS, f"--encoder must be one of {', '.join(ENCODERS)}, not {opts.encoder!r}"),
        (opts.decoder == "stepwise" and opts.agent != "ddpg",
         "--decoder stepwise (per-step re-encoding) works with --agent ddpg only"),
        (opts.plan is not None and strategy != "plan",
         f"--plan gives the plan itself: it cannot be combined with --strategy {strategy}"),
        (opts.policy is not None and strategy not in AGENT_STRATEGIES,
         f"--policy starts a search's agent: it needs --strategy agmc or amc (got {strategy})"),
        (opts.save_policy is not None and strategy not in AGENT_STRATEGIES,
         f"--save-policy writes a search agent's policy: it needs --strategy agmc or amc; {strategy} trains no agent"),
        (opts.resume and strategy not in SEARCH_STRATEGIES,
         f"--resume continues a search: it needs --strategy agmc, amc or random with --data (got {strategy})"),
        (opts.checkpoint is not None and strategy not in SEARCH_STRATEGIES,
         f"--checkpoint is a search's: it needs --strategy agmc, amc or random with --data (got {strategy})"),
    ]  # fmt: skip
    for broken, message in rules:
        if broken:
            raise InputError(message)


def _inputs(model: PathLike, *, data: PathLike | None = None, plan: PathLike | None = None,
            policy: PathLike | None = None, sidecar: PathLike | None = None) -> list[Input]:  # fmt: skip
    """Every path a run reads, named as the user gave it."""
    found = find_sidecar(model)
    named = [("the input model", model), ("--data", data), ("--plan", plan), ("--policy", policy),
             ("--sidecar", sidecar), ("the input's preprocessing sidecar", found)]  # fmt: skip
    return [Input(flag, Path(p)) for flag, p in named if p is not None]


def _latency_cache(given: PathLike | None) -> Output:
    """The latency-table cache folder a budgeted run writes (--latency-cache, else the default)."""
    if given is not None:
        return Output("--latency-cache", Path(given), directory=True)
    from agmc_onnx.latency.build import default_cache_dir

    return Output("--latency-cache (default)", default_cache_dir(), directory=True)


def check_torch_file(path: PathLike, flag: str, what: str) -> None:
    """A file torch.save wrote: a zip archive with a pickle in it (corrupt and truncated files are not)."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            ok = any(n.endswith("data.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        ok = False
    except OSError as exc:
        raise InputError(f"cannot read the {what} ({exc}) given to {flag}", p) from exc
    if not ok:
        raise InputError(f"not a readable {what}: corrupt, truncated or not written by agmc-onnx ({flag})", p)


def check_image_input(proto: onnx.ModelProto, path: PathLike) -> None:
    """A model fed --data: its first graph input float32 (what images become after preprocessing). Further inputs
    come from an .npz of input tensors; the data's arrays are matched to every input once loaded."""
    ins = image_inputs(proto)
    if not ins:
        raise InputError("the model has no graph input to feed --data to", path)
    elem = ins[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "of no tensor type"
        raise InputError(f"input {ins[0].name!r} is {name}; --data images need a float32 [N,C,H,W] input", path)


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def probe_runtime(proto: onnx.ModelProto, path: PathLike, provider: str = "cpu", threads: int | None = None,
                  need_static: bool = True, hint: str = "", input_shapes: Any = None) -> None:  # fmt: skip
    """One ONNX Runtime session of the model and, when its shapes are fixed but the batch, one batch-1 run:
    a custom op, an input type or weights ORT cannot run fail here, before the work. `need_static`: the run
    will time the model, so every axis but the batch must be fixed."""
    from agmc_onnx import bench, runtime

    try:
        sess = runtime.session(proto, provider, threads)
    except AgmcError:
        raise
    except Exception as exc:  # ORT's Fail / InvalidGraph / NotImplemented
        raise InputError(f"ONNX Runtime cannot run this model: {_ort_message(exc)}{hint}", path) from exc
    try:
        feeds = bench.make_inputs(proto, 1, input_shapes=input_shapes)
    except InputError as exc:
        if need_static:
            raise InputError(f"{exc}{hint}", path) from exc
        return  # symbolic image size: the data sets it; the session above is what could be checked
    try:
        sess.run(None, feeds)
    except Exception as exc:
        raise InputError(f"ONNX Runtime cannot run this model at batch 1: {_ort_message(exc)}{hint}", path) from exc


def _ort_message(exc: Exception) -> str:
    """ORT's first line without its '[ONNXRuntimeError] : 1 : FAIL : ' prefix."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _ORT_PREFIX.sub("", first)[:240]


__all__ = ["BenchRequest", "FinetuneRequest", "PruneRequest", "check_image_input", "check_torch_file",
           "probe_runtime", "validate_bench", "validate_finetune", "validate_inspect", "validate_prune"]  # fmt: skip
