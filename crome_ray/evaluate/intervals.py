"""95% intervals for the evaluation's numbers, and paired differences between two models. Pure
(numpy).

- **One proportion** (every outcome 0 or 1, each from its own prompt): the Wilson score
  interval, which keeps its coverage at the small counts an evaluation often has (12 pairs)
  where the normal approximation does not.
- **Anything else** (a mean of outcomes with ½ for equal scores, several pairs per prompt, a
  reward shift, a weighted category mean): a percentile bootstrap **over prompts**: the pairs
  (or answers) of one prompt are resampled together, since they are not independent. Each
  subset is resampled within itself (a stratified bootstrap), so a category's weights stay as
  the data gave them.
- **Two models on the same pairs**: the paired bootstrap of the per-pair differences, each
  replicate resampling the same prompts for both models; the two-sided p-value is twice the
  share of replicates on the far side of zero (capped at 1). A difference is *distinguishable
  from zero* when its interval excludes zero.

Every resample is drawn from a generator seeded by ``seed`` and the stratum's name, so the same
data give the same interval on every run and on every model (that is what makes two models'
replicates paired). scipy's ``bootstrap`` does percentile and BCa intervals but neither
clustered (prompt-level) resampling nor replicates shared across statistics; the weighted
counts below do both in one matrix product.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
DEFAULT_REPS = 2000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    method: str  # wilson | bootstrap | point (no spread to resample)
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | str | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "method": self.method, "n": self.n}


@dataclass(frozen=True)
class Difference:
    """``b − a`` on the same pairs: its paired interval and p-value."""

    interval: Interval
    p_value: float  # 0 when no replicate reached zero: then below ``p_resolution``
    p_resolution: float = 0.0  # the smallest p-value the resamples can show (2 / resamples)

    @property
    def distinguishable(self) -> bool:
        """The interval excludes zero and p < 0.05 (a difference seen on one prompt is not)."""
        return self.interval.excludes_zero() and self.p_value < 0.05

    def as_dict(self) -> dict[str, object]:
        return {
            **self.interval.as_dict(),
            "p_value": self.p_value,
            "p_resolution": self.p_resolution,
            "distinguishable": self.distinguishable,
        }


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of ``successes`` out of ``n``."""
    if n <= 0:
        raise ValueError("a proportion of nothing has no interval")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), "wilson", n)


def _rng(seed: int, stratum: Hashable) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{stratum}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _clusters(values: Sequence[float], units: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (unit): the sum of its values and their count, in first-seen order."""
    sums: dict[Hashable, float] = defaultdict(float)
    counts: dict[Hashable, int] = defaultdict(int)
    for v, u in zip(values, units, strict=True):
        sums[u] += v
        counts[u] += 1
    return np.array(list(sums.values()), dtype=float), np.array(list(counts.values()), dtype=float)


def replicates(
    values: Sequence[float], units: Sequence[Hashable], *, seed: int, stratum: Hashable = "", reps: int
) -> np.ndarray:
    """``reps`` bootstrap means of ``values``, resampling whole units (prompts) with replacement.
    The resample counts are drawn in chunks, so memory stays small at tens of thousands of prompts."""
    sums, counts = _clusters(values, units)
    k = len(sums)
    rng = _rng(seed, stratum)
    chunk = max(1, min(reps, 4_000_000 // max(k, 1)))
    out = []
    for start in range(0, reps, chunk):
        weights = rng.multinomial(k, np.full(k, 1.0 / k), size=min(chunk, reps - start)).astype(float)
        out.append((weights @ sums) / np.maximum(weights @ counts, 1e-12))
    return np.concatenate(out)


def _percentile(value: float, reps: np.ndarray, n: int) -> Interval:
    if np.ptp(reps) <= 1e-12 * max(1.0, abs(value)):  # a constant (its mean rounds in the last bit)
        return Interval(value, value, value, "point", n)
    low, high = np.quantile(reps, [0.025, 0.975])
    return Interval(value, float(low), float(high), "bootstrap", n)


def mean_interval(
    values: Sequence[float],
    units: Sequence[Hashable] | None = None,
    *,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    stratum: Hashable = "",
) -> Interval | None:
    """The mean of ``values`` with its 95% interval: Wilson when it is one proportion (0/1 values,
    one per unit), else the bootstrap over ``units`` (each value its own unit when None)."""
    if not values:
        return None
    units = list(range(len(values))) if units is None else list(units)
    value = float(np.mean(values))
    if all(v in (0.0, 1.0) for v in values):
        k = len(set(units))
        if k == len(units):
            return wilson(sum(values), len(values))
        if value in (0.0, 1.0):  # all right (or all wrong) over k prompts: the bootstrap sees no spread
            w = wilson(value * k, k)
            return Interval(value, w.low, w.high, "wilson (prompts)", len(values))
    return _percentile(value, replicates(values, units, seed=seed, stratum=stratum, reps=reps), len(values))


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    units: Sequence[Hashable] | None = None,
    *,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    stratum: Hashable = "",
) -> Difference | None:
    """``mean(b) − mean(a)`` over the same items (the same order), by the paired bootstrap."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in number: {len(a)} against {len(b)}")
    if not a:
        return None
    d = [y - x for x, y in zip(a, b, strict=True)]
    units = list(range(len(d))) if units is None else list(units)
    reps_d = replicates(d, units, seed=seed, stratum=stratum, reps=reps)
    return _difference(float(np.mean(d)), reps_d, len(d), len(set(units)))


def _difference(value: float, reps: np.ndarray, n: int, clusters: int) -> Difference:
    interval = _percentile(value, reps, n)
    if interval.method == "point":
        # every resample the same: no difference (p = 1), or the same one on every prompt, which
        # the sign test over the prompts prices (one prompt: p = 1)
        return Difference(interval, 1.0 if value == 0 else min(1.0, 2 * 0.5**clusters))
    below, above = float(np.mean(reps <= 0)), float(np.mean(reps >= 0))
    return Difference(interval, min(1.0, 2 * min(below, above)), 2 / len(reps))


@dataclass(frozen=True)
class Stratified:
    """Values grouped by stratum (a subset), each with its unit (a prompt): the data of a
    weighted mean of stratum means, such as a RewardBench category or its average."""

    values: Mapping[str, Sequence[float]]
    units: Mapping[str, Sequence[Hashable]]

    def replicates(self, *, seed: int, reps: int) -> dict[str, np.ndarray]:
        return {
            s: replicates(v, self.units[s], seed=seed, stratum=s, reps=reps)
            for s, v in self.values.items()
            if len(v)
        }


def _combined(
    data: Stratified, combine: Mapping[str, Mapping[str, float]], *, seed: int, reps: int
) -> tuple[float, np.ndarray, int, int] | None:
    """The point value, the replicates, the count of items and of prompts of the mean over groups
    of each group's weighted mean of stratum means (None when no group has data)."""
    point = {s: float(np.mean(v)) for s, v in data.values.items() if len(v)}
    groups = [{s: w for s, w in g.items() if s in point and w > 0} for g in combine.values()]
    groups = [g for g in groups if g]
    if not groups:
        return None
    reps_by = data.replicates(seed=seed, reps=reps)

    def over_groups(means: Mapping[str, float | np.ndarray]) -> float | np.ndarray:
        return sum(sum(means[s] * w for s, w in g.items()) / sum(g.values()) for g in groups) / len(groups)

    n = sum(len(data.values[s]) for g in groups for s in g)
    clusters = len({u for g in groups for s in g for u in data.units[s]})
    return float(over_groups(point)), np.asarray(over_groups(reps_by)), n, clusters


def weighted_interval(
    data: Stratified, combine: Mapping[str, Mapping[str, float]], *, seed: int = 0, reps: int = DEFAULT_REPS
) -> Interval | None:
    """The mean over groups (categories) of each group's weighted mean of stratum (subset) means:
    ``combine`` maps a group to its strata's weights. The strata are resampled separately."""
    got = _combined(data, combine, seed=seed, reps=reps)
    return None if got is None else _percentile(*got[:3])


def weighted_difference(
    a: Stratified,
    b: Stratified,
    combine: Mapping[str, Mapping[str, float]],
    *,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
) -> Difference | None:
    """``b − a`` of ``weighted_interval``'s statistic, on the same items (paired)."""
    d = {s: [y - x for x, y in zip(v, b.values[s], strict=True)] for s, v in a.values.items()}
    got = _combined(Stratified(d, a.units), combine, seed=seed, reps=reps)
    return None if got is None else _difference(*got)
