"""Torch-Pruning's magnitude plans as a benchmark baseline, mapped onto agmc-onnx's channel groups.

The ONNX file is converted to PyTorch (onnx2torch), Torch-Pruning (benchmark-only dependency,
`pip install torch-pruning==1.6.1`) ranks channel groups with its own dependency graph and
importance (GroupMagnitudeImportance, p=2: "global L2" / "local L2"), and the channel indices it
would remove are read from its interactive step WITHOUT pruning the torch model. Those indices
become an agmc-onnx Plan, so the baseline is scored by exactly the same evaluator, BN
re-calibration and surgery as every other strategy. Torch-Pruning's pruning ratio counts channels,
not MACs, so it is bisected until the plan's MACs (agmc-onnx's cost model) meet the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from agmc_onnx.plan import Plan, validate

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis


def _producer_modules(analysis: Analysis, module: nn.Module) -> dict[int, list[int]]:
    """id(torch Conv/Linear) -> the prunable groups whose producer weight it holds (matched by value)."""
    inits = analysis.model.inits
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d))]
    found: dict[int, list[int]] = {}
    for g in analysis.prunable_groups():
        for mem in g.members:
            if mem.role != "producer" or mem.tensor not in inits:
                continue
            arr = np.asarray(inits[mem.tensor])
            for m in layers:
                w = m.weight.detach().cpu().numpy()
                if w.shape == arr.shape and np.array_equal(w, arr):
                    found.setdefault(id(m), []).append(g.id)
    missing = {g.id for g in analysis.prunable_groups()} - {gid for gids in found.values() for gid in gids}
    if missing:  # a group Torch-Pruning cannot see would silently stay whole: refuse instead
        raise RuntimeError(f"groups {sorted(missing)} have no producer Conv/Linear in the torch model")
    return found


def _removed(module: nn.Module, owners: dict[int, list[int]], example: torch.Tensor, ratio: float,
             global_pruning: bool) -> dict[int, set[int]]:  # fmt: skip
    """Group id -> channel indices Torch-Pruning removes at this channel ratio (the model is not touched)."""
    import torch_pruning as tp

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    pruner = tp.pruner.MetaPruner(
        module, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=global_pruning, pruning_ratio=ratio, iterative_steps=1,
        ignored_layers=linears[-1:],
    )  # fmt: skip
    out: dict[int, set[int]] = {}
    for group in pruner.step(interactive=True):
        for item in group:
            dep, idxs = item.dep, item.idxs
            if not pruner.DG.is_out_channel_pruning_fn(dep.handler):
                continue
            for gid in owners.get(id(dep.target.module), []):
                out.setdefault(gid, set()).update(int(i) for i in idxs)
    return out


def torch_pruning_plan(analysis: Analysis, target_macs: float, global_pruning: bool = True,
                       tol: float = 0.005, iters: int = 18) -> tuple[Plan, float]:  # fmt: skip
    """Torch-Pruning's L2 plan (global or local) bisected to `target_macs` of the original MACs.

    Returns the plan and the channel pruning ratio Torch-Pruning was given.
    """
    from converters.onnx_to_torch import to_torch

    module = to_torch(analysis.model.proto, trainable=False).eval()
    shape = [d if isinstance(d, int) else 1 for d in analysis.model.shape(analysis.model.proto.graph.input[0].name) or []]
    example = torch.zeros(shape)
    groups = {g.id: g for g in analysis.prunable_groups()}
    owners = _producer_modules(analysis, module)  # weight matching: once, not per bisection step

    def plan_at(ratio: float) -> tuple[Plan, float]:
        removed = _removed(module, owners, example, ratio, global_pruning)
        kept = {gid: [c for c in range(g.size) if c not in removed.get(gid, set())] or [0]
                for gid, g in groups.items()}  # fmt: skip
        plan = Plan(kept)
        validate(analysis, plan)
        return plan, analysis.cost.macs(plan.keep_counts()) / analysis.cost.total_macs

    lo, hi = 0.0, 0.95
    best: tuple[Plan, float] | None = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        plan, macs = plan_at(mid)
        if macs <= target_macs:
            best, hi = (plan, mid), mid
            if target_macs - macs <= tol:
                break
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"Torch-Pruning could not reach {target_macs:.2f} of the MACs")
    return best
