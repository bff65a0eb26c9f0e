"""Channel importance per group, summed over every member tensor that holds the group's channels."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agmc_onnx.analysis import Analysis
    from agmc_onnx.groups import ChannelGroup


def _per_position(arr: np.ndarray, axis: int, power: int) -> np.ndarray:
    """Sum of |w|^power over every axis but `axis`, one value per position along it."""
    moved = np.moveaxis(np.abs(arr.astype(np.float64)), axis, 0).reshape(arr.shape[axis], -1)
    return (moved**power).sum(axis=1)


def _norm_score(analysis: Analysis, group: ChannelGroup, power: int) -> np.ndarray:
    """Lp score of each channel: summed |w|^p over all members and positions, then the p-th root."""
    score = np.zeros(group.size, dtype=np.float64)
    for m in group.members:
        arr = analysis.model.inits[m.tensor]
        vals = _per_position(arr, m.axis, power)
        np.add.at(score, np.array(m.channels, dtype=np.int64), vals[list(m.positions)])
    return score if power == 1 else np.sqrt(score)


def l1(analysis: Analysis, group: ChannelGroup) -> np.ndarray:
    """L1 norm of every weight coupled to each channel."""
    return _norm_score(analysis, group, 1)


def l2(analysis: Analysis, group: ChannelGroup) -> np.ndarray:
    """L2 norm of every weight coupled to each channel."""
    return _norm_score(analysis, group, 2)


def bn_scale(analysis: Analysis, group: ChannelGroup) -> np.ndarray:
    """|gamma| summed over the group's BatchNormalization scales; L1 when the group has no BN."""
    nodes = {n.name: n for n in analysis.model.nodes}
    score = np.zeros(group.size, dtype=np.float64)
    found = False
    for m in group.members:
        node = nodes.get(m.node)
        if node is not None and node.op_type == "BatchNormalization" and node.input[1] == m.tensor:
            vals = np.abs(analysis.model.inits[m.tensor].astype(np.float64))
            np.add.at(score, np.array(m.channels, dtype=np.int64), vals[list(m.positions)])
            found = True
    return score if found else l1(analysis, group)


IMPORTANCE: dict[str, Callable[[Analysis, ChannelGroup], np.ndarray]] = {"l1": l1, "l2": l2, "bn": bn_scale}


def scores(analysis: Analysis, group: ChannelGroup, kind: str = "l1") -> np.ndarray:
    """Importance of each channel of a group by `kind` (l1, l2, bn)."""
    if kind not in IMPORTANCE:
        from agmc_onnx.errors import InputError

        raise InputError(f"unknown importance {kind!r} (choose from {', '.join(IMPORTANCE)})")
    return IMPORTANCE[kind](analysis, group)
