"""Reward shift: how far a meaning-preserving rewrite moves a reward model's score. Pure.

Accuracy on transformed pairs says little about a small reward model that learned little
quality: it sits near chance whether or not it ignores a cue. The shift ``r(T(y)) − r(y)``,
over every answer ``y``, shows the difference: a robust model's shift is near zero. It is
given in reward units and as a fraction of the model's own reward spread on the untransformed
set (the standard deviation of its scores), so that models with different scales compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shift:
    n: int
    mean: float  # mean of r(T(y)) − r(y), reward units
    std: float  # spread of the shift
    mean_abs: float
    share_above: float  # share of answers with |shift| > threshold × spread
    threshold: float  # in units of the reward spread
    spread: float  # the model's reward spread (std of r(y)) on the untransformed set
    mean_in_spread: float  # mean / spread (0 when the spread is 0)


def std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def reward_shift(
    before: Sequence[float], after: Sequence[float], spread: float, threshold: float = 0.25
) -> Shift:
    """The shift of each ``after`` against its ``before`` (same answers, same order)."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} scores before but {len(after)} after")
    d = [a - b for a, b in zip(after, before, strict=True)]
    n = len(d)
    if n == 0:
        return Shift(0, 0.0, 0.0, 0.0, 0.0, threshold, spread, 0.0)
    mean = sum(d) / n
    cut = threshold * spread
    return Shift(
        n=n,
        mean=mean,
        std=std(d),
        mean_abs=sum(abs(x) for x in d) / n,
        share_above=sum(abs(x) > cut for x in d) / n,
        threshold=threshold,
        spread=spread,
        mean_in_spread=mean / spread if spread > 0 else 0.0,
    )
