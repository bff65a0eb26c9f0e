"""What the search loop and its scorers exchange: a candidate's score, with which worker scored it and how long."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    """One candidate's score, with the scorer (worker index) that computed it and its seconds there."""

    reward: float
    worker: int | None = 0
    seconds: float = 0.0


ScoreMany = Callable[[Sequence[Mapping[int, int]]], list[Scored]]  # a batch of keep counts -> scores, in order
