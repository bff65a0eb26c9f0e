"""Every choice of a `prune` run (the CLI's flags, typed): what the validation step checks and the run takes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agmc_onnx.report import Gates

PathLike = str | os.PathLike[str]


@dataclass
class PruneOptions:
    """Every choice of a `prune` run (the CLI's flags, typed)."""

    target_flops: float | None = None
    strategy: str | None = None  # None: agmc with data and no plan, else uniform (plan with a plan file)
    plan: PathLike | None = None
    output: PathLike | None = None  # None: MODEL.pruned.onnx
    report: PathLike | None = None  # None: OUTPUT.report.json
    round_to: int | str = "auto"
    importance: str = "l1"
    seed: int = 0
    data: PathLike | None = None
    episodes: int | None = None
    reward_images: int | None = None
    agent: str = "ddpg"
    decoder: str = "groups"
    encoder: str = "auto"  # agmc's GNN: frozen as built or trained with the actor; auto: frozen for "groups"
    policy: PathLike | None = None
    save_policy: PathLike | None = None
    checkpoint: PathLike | None = None
    resume: bool = False
    bn_recalibrate: bool = True
    finetune_epochs: int = 0
    distill: bool = False
    bench: bool = True
    bench_batches: tuple[int, ...] = (1,)
    bench_repeats: int = 30
    provider: str = "cpu"
    threads: int | None = None
    target_latency_ms: float | None = None
    target_speedup: float | None = None
    latency_batch: int = 1
    latency_cache: PathLike | None = None
    latency_rounds: int = 2
    gates: Gates = field(default_factory=Gates)
    command: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)  # --scale/--mean/--std/--layout/--resize (None: unset)
    sidecar: PathLike | None = None  # a preprocessing sidecar other than the one beside the model
    workers: int = 1  # Ray scorer workers for a search (> 1 needs the ray extra)
    ray_address: str | None = None  # a Ray cluster to join (None: a private Ray on this machine)
    reward: str | None = None  # "accuracy" | "fidelity"; None: accuracy with labels, fidelity without
    augment: bool = True  # fine-tuning augmentations (image inputs only)
    recipe: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig's temperature / color / feature_points
    output_kinds: dict[str, str] | None = None  # fidelity / distillation form per graph output (default inferred)
    output_weights: dict[str, float] | None = None  # weight per graph output (default equal)
    input_shapes: dict[str, tuple[int, ...]] | None = None  # --input-shape: the size a dynamic file is analysed at

    def chosen_strategy(self) -> str:
        """The strategy the run uses."""
        if self.strategy is None:
            return "agmc" if self.data is not None and self.plan is None else ("plan" if self.plan else "uniform")
        return "plan" if self.plan is not None and self.strategy == "uniform" else self.strategy

    def latency(self) -> dict[str, Any]:
        """prune_model's latency keywords; empty without a latency budget."""
        if self.target_latency_ms is None and self.target_speedup is None:
            return {}
        return {"target_latency_ms": self.target_latency_ms, "target_speedup": self.target_speedup,
                "latency_batch": self.latency_batch, "latency_cache": self.latency_cache,
                "provider": self.provider, "threads": self.threads, "latency_rounds": self.latency_rounds}  # fmt: skip
