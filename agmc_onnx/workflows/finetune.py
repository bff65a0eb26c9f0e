"""The `finetune` command's job (fine-tune a pruned file, export, measure, report) and the fine-tune step
of a `prune` run; the training loop itself is agmc_onnx.finetune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agmc_onnx import io
from agmc_onnx.evaluate import evaluate_onnx, fidelity_onnx, reference_fidelity
from agmc_onnx.finetune import FinetuneConfig, FinetuneResult, finetune
from agmc_onnx.model import load as load_model
from agmc_onnx.workflows.context import self_check
from agmc_onnx.workflows.validate import FinetuneRequest, validate_finetune


@dataclass
class FinetuneRun:
    """What `agmc-onnx finetune` did: the fine-tune result, the report and where files went."""

    result: FinetuneResult
    report: dict[str, Any]
    output: Path
    report_json: Path
    report_md: Path


def run_finetune(
    model: str | Path,
    data_dir: str | Path,
    *,
    output: Path,
    epochs: int = 10,
    distill: str | Path | None = None,
    original: str | Path | None = None,
    report_path: str | Path | None = None,
    optimizer: str = "sgd",
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int = 128,
    held_out: int | None = None,
    augment: bool = True,
    flip: bool = True,
    distill_alpha: float = 0.5,
    recipe: dict[str, Any] | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    do_bench: bool = True,
    bench_batches: tuple[int, ...] | list[int] = (1,),
    bench_repeats: int = 30,
    provider: str = "cpu",
    threads: int | None = None,
    gates: Any = None,
    command: str | None = None,
    preprocess: dict[str, Any] | None = None,
    sidecar: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
    request: FinetuneRequest | None = None,
    note: Callable[[str], None] | None = None,
    output_kinds: dict[str, str] | None = None,
    output_weights: dict[str, float] | None = None,
    input_shapes: Any = None,
) -> FinetuneRun:
    """Fine-tune, write the model, measure accuracy (ORT) and latency, write the JSON + markdown report.

    The data is read with the model's own preprocessing (flags > sidecar > what the file records),
    so a file written by `prune` is fine-tuned on the inputs it was pruned with. Data without labels is
    distilled from the original (`distill`, else `original`); the report gives every model's fidelity to
    that original on the test split (held out from the data when it has none), before and after. Everything
    is checked first (`validate_finetune`, or the `request` it returned); the files are committed at the
    end, or none when the run fails. `recipe` overrides FinetuneConfig's distillation settings (temperature,
    color, feature_points, feature_weight)."""
    req = request or validate_finetune(
        model, data_dir, output=output, report_path=report_path, distill=distill, original=original,
        held_out=held_out, do_bench=do_bench, provider=provider, threads=threads, gates=gates,
        preprocess=preprocess, sidecar=sidecar, seed=seed, input_shapes=input_shapes,
        feature_points=(recipe or {}).get("feature_points", 0),
    )  # fmt: skip
    from agmc_onnx import bench, report

    ctx, output, json_path = req.context, req.output, req.report
    for line in ctx.notes:
        if note is not None:
            note(line)
    with io.staged(req.staged):
        (train, held), test = ctx.finetune_data(held_out), ctx.test
        assert test is not None  # validate_finetune needs a test split
        baseline = original or distill
        teacher = distill if distill is not None or ctx.labelled else original
        labelled = test.labelled
        start = evaluate_onnx(ctx.model.source, test) if labelled else None
        base_acc = evaluate_onnx(baseline, test) if baseline is not None and labelled else None
        reference = reference_fidelity(baseline, test, output_kinds, output_weights) if baseline is not None else None
        # a pruned input may score low for good reason: the unpruned baseline is what tells a wrong preprocessing
        low = ctx.low_accuracy_warning(base_acc, "test split (the --original/--distill model)") if base_acc is not None else None
        if low and warn is not None:
            warn(low)
        cfg = FinetuneConfig(
            epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
            augment=augment, flip=flip, distill_alpha=distill_alpha, device=device, seed=seed, **(recipe or {}),
        )  # fmt: skip
        # the teacher as loaded (normalised): exporters' weight-sharing Identity nodes do not convert to torch
        teacher_proto = load_model(teacher, input_shapes=ctx.input_shapes).proto if teacher is not None else None
        result = finetune(ctx.model.source, train, held, cfg, teacher=teacher_proto, test=test, progress=progress,
                          output_kinds=output_kinds, output_weights=output_weights)  # fmt: skip
        proto = ctx.describe(result.proto)
        stages: dict[str, dict[str, Any]] = {}
        if baseline is not None:
            stages["original"] = report.model_facts(baseline, base_acc, ctx.input_shapes)
        stages["pruned"] = report.model_facts(model, start, ctx.input_shapes)
        stages["finetuned"] = report.model_facts(proto, result.test_accuracy_onnx, ctx.input_shapes)
        if reference is not None:
            stages["original"]["fidelity"] = 1.0
            stages["pruned"]["fidelity"] = fidelity_onnx(ctx.model.source, test, reference)
            stages["finetuned"]["fidelity"] = fidelity_onnx(proto, test, reference)
        stages["finetuned"]["path"] = str(output)
        latency = None
        if do_bench:
            models = ([baseline] if baseline is not None else []) + [proto]
            labels = (["original"] if baseline is not None else []) + ["finetuned"]
            latency = bench.bench(models, list(bench_batches), provider=provider, threads=threads,
                                  repeats=bench_repeats, labels=labels, input_shapes=ctx.input_shapes).to_json()  # fmt: skip
        loss = "cross-entropy" + (" + distillation" if teacher else "") if ctx.labelled else "distillation (no labels)"
        extra = {"finetune": {**result.summary(), "config": asdict(cfg), "loss": loss}, "notes": list(ctx.notes)}
        rep = report.build("finetune", stages, latency=latency, gates=gates, command=command, extra=extra)
        rep["warnings"] = ([low] if low else []) + report.latency_warnings(rep, proto, provider, threads, ctx.input_shapes)
        written = io.write_model(proto, output, model)
        self_check(written, test, result.test_accuracy_onnx, reference, stages["finetuned"].get("fidelity"),
                   io.staged_file(written))
        ctx.write_sidecar(written)
        jp, mp = report.write(rep, json_path)
    return FinetuneRun(result, rep, output, jp, mp)
