"""Plans: which channels of each group are kept; built from keep ratios with rounding and importance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agmc_onnx.errors import InputError

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis


@dataclass
class Plan:
    """Kept channel indices per group id (groups not listed keep everything)."""

    kept: dict[int, list[int]]
    ratios: dict[int, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: {"kept": {gid: [...]}, "ratios": {gid: r} | None}."""
        return {
            "kept": {str(k): [int(i) for i in v] for k, v in sorted(self.kept.items())},
            "ratios": None if self.ratios is None else {str(k): float(v) for k, v in sorted(self.ratios.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Plan:
        """Inverse of to_json."""
        kept = {int(k): sorted(int(i) for i in v) for k, v in d["kept"].items()}
        ratios = d.get("ratios")
        return cls(kept, None if ratios is None else {int(k): float(v) for k, v in ratios.items()})

    def keep_counts(self) -> dict[int, int]:
        """Number of kept channels per listed group."""
        return {g: len(v) for g, v in self.kept.items()}


RoundTo = int | str  # resolved --round-to: N (every group steps by N) or "auto:B" (per-group steps, block B)

AUTO_MIN_CHOICES = 4  # under auto, a group keeps at least this many widths ...
AUTO_MIN_STEP = 4  # ... unless that would need a step below this


def group_step(size: int, round_to: RoundTo, width: int = 1) -> int:
    """Rounding step of a group of `size` channels: N when explicit; under "auto:B" B for wide groups, finer for narrow.

    A group whose channels are each `width` positions wide (attention heads: ChannelGroup.class_width, the
    head dim) steps by the number of channels that covers that many positions, at least one: a head of 16
    or 64 is already a whole runtime block, so heads step by one.

    Narrow groups step by the largest power of two <= B that leaves at least AUTO_MIN_CHOICES widths,
    never below AUTO_MIN_STEP: with B=16, 16 channels step by 4, 24 by 4, 32 by 8, 64 and wider by 16.
    Measured (benchmarks/round_steps.py: 3x3 conv pair C -> k -> C, ORT CPU AVX-512, 2 threads,
    interleaved, load 6-7 on 2 cores): C=16 at 28x28, k=4/8/12/16: 0.055/0.064/0.073/0.078 ms at
    batch 1, 18.7/20.4/20.3/20.2 ms at batch 64, so a 16-channel group loses no speed with step 4
    and becomes prunable (with B it cannot be pruned at all); C=32 at 14x14, batch 1: k=4..16 cost
    0.032-0.042 ms and k=20..32 all 0.072 ms, so B=16 is the real block there: step 8 adds the width
    24 for accuracy (ResNet-20 at 50% MACs: 24.5% test accuracy with 16 everywhere, 78.5% with 8) but
    24 runs no faster than 32. Groups of 64 and wider keep B: they have >= 4 widths already.
    Why 4 widths, not 2 (16 by 8, 32 by 16): on the README demo (agmc, seed 0) 81.05% vs 67.75% test
    accuracy, and an l1-global ResNet-56 at 50% MACs ran no faster at batch 64 (1.40x vs 1.42x).
    """
    if isinstance(round_to, int):
        return max(1, round_to // max(1, width))
    step = _auto_block(round_to)
    while step > AUTO_MIN_STEP and -(-size * width // step) < AUTO_MIN_CHOICES:
        step //= 2
    return max(1, step // max(1, width))


def round_count(count: float, size: int, round_to: RoundTo, width: int = 1) -> int:
    """Kept count: a multiple of the group's step (or the full size), at least one step, never zero."""
    n = group_step(size, round_to, width)
    if size <= n:
        return size
    k = int(round(count / n)) * n
    k = max(n, k)
    return size if k >= size else k


def auto_round_to() -> int:
    """The runtime block: 16 on a CPU with AVX-512 (ORT CPU blocks channels by 16 there), 8 otherwise."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return 8
    return 16 if "avx512f" in flags else 8


def _auto_block(value: str) -> int:
    """The block B of "auto" (this machine's) or "auto:B" (a power of two)."""
    text = value.strip().lower()
    if text == "auto":
        return auto_round_to()
    head, _, tail = text.partition(":")
    if head != "auto" or not tail.isdigit() or int(tail) < 1 or int(tail) & (int(tail) - 1):
        raise InputError(f"--round-to must be 'auto', 'auto:B' (B a power of two) or a positive integer, not {value!r}")
    return int(tail)


def parse_round_to(value: str | int) -> RoundTo:
    """'auto' -> "auto:B" with this runtime's block B; 'auto:B' as given; a positive integer N -> N."""
    if isinstance(value, int):
        n = value
    elif str(value).strip().lower().startswith("auto"):
        return f"auto:{_auto_block(str(value))}"
    else:
        try:
            n = int(value)
        except ValueError as exc:
            raise InputError(f"--round-to must be 'auto' or a positive integer, not {value!r}") from exc
    if n < 1:
        raise InputError(f"--round-to must be a positive integer, not {n}")
    return n


class ImportanceCache:
    """Importance order of each group's channels, computed once (most important first)."""

    def __init__(self, analysis: Analysis, importance: str = "l1") -> None:
        """Rank lazily per group."""
        self.analysis = analysis
        self.importance = importance
        self._order: dict[int, np.ndarray] = {}
        self._scores: dict[int, np.ndarray] = {}

    def scores(self, gid: int) -> np.ndarray:
        """Importance scores of a group's channels."""
        if gid not in self._scores:
            from agmc_onnx.importance import scores

            self._scores[gid] = scores(self.analysis, self.analysis.groups[gid], self.importance)
        return self._scores[gid]

    def order(self, gid: int) -> np.ndarray:
        """Channel indices sorted by decreasing importance (stable: ties keep the lower index)."""
        if gid not in self._order:
            self._order[gid] = np.argsort(-self.scores(gid), kind="stable")
        return self._order[gid]

    def top(self, gid: int, k: int) -> list[int]:
        """The k most important channels, sorted by index."""
        return sorted(int(i) for i in self.order(gid)[:k])


def plan_from_counts(analysis: Analysis, counts: Mapping[int, int], importance: str | ImportanceCache = "l1") -> Plan:
    """Plan keeping the `counts[gid]` most important channels of each prunable group."""
    cache = importance if isinstance(importance, ImportanceCache) else ImportanceCache(analysis, importance)
    kept = {}
    for g in analysis.prunable_groups():
        k = int(counts.get(g.id, g.size))
        if k <= 0 or k > g.size:
            raise InputError(f"group {g.id}: cannot keep {k} of {g.size} channels")
        kept[g.id] = list(range(g.size)) if k == g.size else cache.top(g.id, k)
    for gid, chans in analysis.partial_sets():
        if gid in kept and not chans.intersection(kept[gid]):
            order = cache.order(gid)
            best = next(int(c) for c in order if int(c) in chans)
            kept[gid] = sorted(kept[gid] + [best])
    return Plan(kept)


def counts_from_ratios(analysis: Analysis, ratios: Mapping[int, float], round_to: RoundTo = 16) -> dict[int, int]:
    """Rounded keep counts of the prunable groups for keep ratios (missing groups keep all)."""
    out = {}
    for g in analysis.prunable_groups():
        r = float(ratios.get(g.id, 1.0))
        if not (math.isfinite(r) and 0.0 < r <= 1.0):
            raise InputError(f"group {g.id}: keep ratio {r} is outside (0, 1]")
        out[g.id] = round_count(r * g.size, g.size, round_to, g.class_width)
    return out


def plan_from_ratios(
    analysis: Analysis,
    ratios: Mapping[int, float],
    importance: str | ImportanceCache = "l1",
    round_to: RoundTo = 16,
) -> Plan:
    """Keep counts = round(ratio*size) to a multiple of the group's step (group_step); channels by importance."""
    plan = plan_from_counts(analysis, counts_from_ratios(analysis, ratios, round_to), importance)
    plan.ratios = {g.id: float(ratios.get(g.id, 1.0)) for g in analysis.prunable_groups()}
    return plan


def full_plan(analysis: Analysis) -> Plan:
    """A plan that keeps everything."""
    return Plan({g.id: list(range(g.size)) for g in analysis.prunable_groups()}, {g.id: 1.0 for g in analysis.prunable_groups()})


def validate(analysis: Analysis, plan: Plan, source: str | None = None) -> None:
    """Reject plans naming unknown or frozen groups, empty groups or bad indices (errors name `source`, the plan file)."""
    for gid, kept in plan.kept.items():
        if gid < 0 or gid >= len(analysis.groups):
            raise InputError(f"plan names group {gid}, the model has groups 0..{len(analysis.groups) - 1}", source)
        g = analysis.groups[gid]
        if not g.prunable:
            if sorted(kept) != list(range(g.size)):
                raise InputError(f"plan prunes group {gid}, which is frozen: {g.frozen_reason}", source)
            continue
        if not kept:
            raise InputError(f"plan keeps no channel of group {gid}", source)
        if len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= g.size:
            bad = sorted({i for i in kept if not 0 <= i < g.size}) or sorted({i for i in kept if kept.count(i) > 1})
            raise InputError(f"plan has bad channel indices for group {gid} (size {g.size}): {bad[:5]}", source)
    for gid, chans in analysis.partial_sets():
        if gid in plan.kept and analysis.groups[gid].prunable and not chans.intersection(plan.kept[gid]):
            raise InputError(f"plan keeps none of channels {sorted(chans)} of group {gid}, which one tensor "
                             "holds alone (after a Split/Slice); it would become empty", source)
