"""The `finetune` command's job (fine-tune a pruned file, export, measure, report) and the fine-tune step
of a `prune` run; the training loop itself is agmc_onnx.finetune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agmc_onnx.evaluate import evaluate_onnx
from agmc_onnx.finetune import FinetuneConfig, FinetuneResult, finetune
from agmc_onnx.workflows.context import build_context, self_check


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
    input_shapes: Any = None,
) -> FinetuneRun:
    """Fine-tune, write the model, measure accuracy (ORT) and latency, write the JSON + markdown report.

    The data is read with the model's own preprocessing (flags > sidecar > what the file records),
    so a file written by `prune` is fine-tuned on the inputs it was pruned with."""
    from agmc_onnx import bench, report
    from agmc_onnx.io import check_output_path, write_model

    check_output_path(output, model)
    json_path = Path(report_path) if report_path else output.with_name(output.name.removesuffix(".onnx") + ".report.json")
    check_output_path(json_path, model)
    ctx = build_context(model, data_dir, need_test=True, seed=seed, sidecar=sidecar, flags=preprocess,
                        input_shapes=input_shapes)  # fmt: skip
    (train, held), test = ctx.finetune_data(held_out), ctx.test
    start = evaluate_onnx(ctx.model.source, test)
    baseline = original or distill
    base_acc = evaluate_onnx(baseline, test) if baseline is not None else None
    # a pruned input may score low for good reason: the unpruned baseline is what tells a wrong preprocessing
    low = ctx.low_accuracy_warning(base_acc, "test split (the --original/--distill model)") if base_acc is not None else None
    if low and warn is not None:
        warn(low)
    cfg = FinetuneConfig(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
        augment=augment, flip=flip, distill_alpha=distill_alpha, device=device, seed=seed,
    )  # fmt: skip
    result = finetune(ctx.model.source, train, held, cfg, teacher=distill, test=test, progress=progress)
    proto = ctx.describe(result.proto)
    stages: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        stages["original"] = report.model_facts(baseline, base_acc, ctx.input_shapes)
    stages["pruned"] = report.model_facts(model, start, ctx.input_shapes)
    stages["finetuned"] = report.model_facts(proto, result.test_accuracy_onnx, ctx.input_shapes)
    stages["finetuned"]["path"] = str(output)
    latency = None
    if do_bench:
        models = ([baseline] if baseline is not None else []) + [proto]
        labels = (["original"] if baseline is not None else []) + ["finetuned"]
        latency = bench.bench(models, list(bench_batches), provider=provider, threads=threads, repeats=bench_repeats,
                              labels=labels, input_shapes=ctx.input_shapes).to_json()  # fmt: skip
    extra = {"finetune": {**result.summary(), "config": asdict(cfg)}}
    rep = report.build("finetune", stages, latency=latency, gates=gates, command=command, extra=extra)
    rep["warnings"] = ([low] if low else []) + report.latency_warnings(rep, proto, provider, threads, ctx.input_shapes)
    written = write_model(proto, output, model)
    sidecar_out = None
    try:
        self_check(written, test, result.test_accuracy_onnx)
        sidecar_out = ctx.write_sidecar(written)
        jp, mp = report.write(rep, json_path)
    except BaseException:
        for path in (written, sidecar_out):
            if path is not None:
                path.unlink(missing_ok=True)
        raise
    return FinetuneRun(result, rep, output, jp, mp)
