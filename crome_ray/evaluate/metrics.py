"""One model's numbers from its scored variants: categories, transformations, reward shift and
the planted cue. Pure: a list of scored rows in, a JSON-ready dict out.

- **Categories**: RewardBench-style (``categories``), on the untransformed pairs.
- **Transformations**: for each, the accuracy on the pairs it applies to, the accuracy of the
  same pairs untransformed, and the drop between them; their macro average (the mean over
  transformations that had pairs) and mean drop.
- **Reward shift** per transformation: ``r(T(x, y)) − r(x, y)`` over both answers of every pair
  it changed (``shift``), in reward units and in the model's spread: the standard deviation of
  its scores on the untransformed answers.
- **Cue**: the shift the planted text causes over every answer (on the chosen side and on the
  rejected side), and the accuracy when it is planted on the rejected answer, beside the same
  pairs' clean accuracy.

Every accuracy, drop and shift carries its 95% interval (``evaluate.intervals``: Wilson for one
proportion, else the bootstrap over prompts, each subset resampled within itself), and
``differences`` gives two models' paired differences on the same pairs with their p-values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crome_ray.evaluate.categories import category_report, pair_outcome, subset_scores
from crome_ray.evaluate.categories import subset_weights as weights_of
from crome_ray.evaluate.intervals import (
    DEFAULT_REPS,
    Difference,
    Interval,
    Stratified,
    mean_interval,
    paired_difference,
    weighted_difference,
    weighted_interval,
)
from crome_ray.evaluate.shift import reward_shift, std
from crome_ray.evaluate.variants import CUE_ON_CHOSEN, CUE_ON_REJECTED, CUE_VARIANTS, ORIGINAL


@dataclass(frozen=True)
class ScoredVariant:
    dataset: str
    pair_id: str
    subset: str
    variant: str
    score_chosen: float
    score_rejected: float
    prompt_id: str = ""  # the pair's prompt: the bootstrap resamples a prompt's pairs together

    @property
    def outcome(self) -> float:
        return pair_outcome(self.score_chosen, self.score_rejected)

    @property
    def unit(self) -> str:
        return f"{self.dataset}/{self.prompt_id or self.pair_id}"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


Values = tuple[list[float], list[str]]  # per item, and the item's prompt (its bootstrap unit)


@dataclass(frozen=True)
class PerItem:
    """One model's per-pair and per-answer values behind its numbers, in a fixed order (by data
    set and pair), so that two models scored on the same pairs line up item for item."""

    subsets: Stratified  # untransformed outcomes, by subset
    combine: dict[str, dict[str, float]]  # category -> its subsets' weights
    spread: float
    transformed: Stratified  # outcomes under each transformation
    drops: Stratified  # per pair: untransformed outcome − transformed outcome, by transformation
    shifts: dict[str, Values]  # transformation -> r(T(y)) − r(y) per answer, in reward spreads
    cue_shift: Values  # the cue's shift per answer, in reward spreads
    cue_on_rejected: Values  # outcomes with the cue on the rejected answer
    cue_clean: Values  # the same pairs untransformed


def _key(r: ScoredVariant) -> tuple[str, str]:
    return r.dataset, r.pair_id


def per_item(
    rows: Sequence[ScoredVariant],
    *,
    categories: Mapping[str, Sequence[str]],
    subset_weights: Mapping[str, float] | None = None,
    upweight_math: bool = True,
) -> PerItem:
    rows = sorted(rows, key=lambda r: (r.dataset, r.pair_id, r.variant))
    original = {_key(r): r for r in rows if r.variant == ORIGINAL}
    spread = std([s for r in original.values() for s in (r.score_chosen, r.score_rejected)])
    by_subset: dict[str, list[ScoredVariant]] = defaultdict(list)
    for r in original.values():
        by_subset[r.subset].append(r)
    # each subset's weight in its category, as category_report weighs it (only the weights: the
    # accuracies themselves come from the per-pair values)
    weights = weights_of(
        subset_scores((r.subset, r.score_chosen, r.score_rejected) for r in original.values()),
        subset_weights,
        upweight_math=upweight_math,
    )
    combine = {c: {s: weights[s] for s in names if s in weights} for c, names in categories.items()}
    by_variant: dict[str, list[ScoredVariant]] = defaultdict(list)
    for r in rows:
        if r.variant not in (ORIGINAL, *CUE_VARIANTS):
            by_variant[r.variant].append(r)

    def answers(changed: Sequence[tuple[ScoredVariant, ScoredVariant]], sides: str = "both") -> Values:
        """Per answer: the shift in spreads from the untransformed score, and its prompt."""
        values, units = [], []
        for clean, r in changed:
            pairs = {"both": ((clean.score_chosen, r.score_chosen), (clean.score_rejected, r.score_rejected)),
                     "chosen": ((clean.score_chosen, r.score_chosen),),
                     "rejected": ((clean.score_rejected, r.score_rejected),)}[sides]  # fmt: skip
            for before, after in pairs:
                values.append((after - before) / spread if spread > 0 else 0.0)
                units.append(clean.unit)
        return values, units

    on_rejected = [(original[_key(r)], r) for r in rows if r.variant == CUE_ON_REJECTED]
    on_chosen = [(original[_key(r)], r) for r in rows if r.variant == CUE_ON_CHOSEN]
    rej, cho = answers(on_rejected, "rejected"), answers(on_chosen, "chosen")
    return PerItem(
        subsets=Stratified(
            {s: [r.outcome for r in v] for s, v in by_subset.items()},
            {s: [r.unit for r in v] for s, v in by_subset.items()},
        ),
        combine=combine,
        spread=spread,
        transformed=Stratified(
            {t: [r.outcome for r in v] for t, v in by_variant.items()},
            {t: [r.unit for r in v] for t, v in by_variant.items()},
        ),
        drops=Stratified(
            {t: [original[_key(r)].outcome - r.outcome for r in v] for t, v in by_variant.items()},
            {t: [r.unit for r in v] for t, v in by_variant.items()},
        ),
        shifts={t: answers([(original[_key(r)], r) for r in v]) for t, v in by_variant.items()},
        cue_shift=(rej[0] + cho[0], rej[1] + cho[1]),
        cue_on_rejected=([r.outcome for _, r in on_rejected], [r.unit for _, r in on_rejected]),
        cue_clean=([c.outcome for c, _ in on_rejected], [c.unit for c, _ in on_rejected]),
    )


def _d(x: Interval | Difference | None) -> dict[str, Any] | None:
    return None if x is None else x.as_dict()


def _per_group(data: Stratified) -> dict[str, dict[str, float]]:
    return {t: {t: 1.0} for t in data.values}


def intervals(items: PerItem, *, seed: int = 0, reps: int = DEFAULT_REPS) -> dict[str, Any]:
    """The 95% interval of each of the model's numbers (see the module docstring)."""
    kw = {"seed": seed, "reps": reps}
    everything = [v for vs in items.subsets.values.values() for v in vs]
    units = [u for us in items.subsets.units.values() for u in us]
    return {
        "overall": _d(mean_interval(everything, units, stratum="overall", **kw)),
        "subsets": {
            s: _d(mean_interval(v, items.subsets.units[s], stratum=f"subset:{s}", **kw))
            for s, v in items.subsets.values.items()
        },
        "categories": {  # the categories with data, as ``categories`` has them
            c: _d(i)
            for c, w in items.combine.items()
            if (i := weighted_interval(items.subsets, {c: w}, **kw))
        },
        "average": _d(weighted_interval(items.subsets, items.combine, **kw)),
        "transformations": {
            t: {
                "accuracy": _d(mean_interval(v, items.transformed.units[t], stratum=f"t:{t}", **kw)),
                "drop": _d(
                    mean_interval(items.drops.values[t], items.drops.units[t], stratum=f"d:{t}", **kw)
                ),
                "shift_in_spread": _d(mean_interval(*items.shifts[t], stratum=f"s:{t}", **kw)),
            }
            for t, v in items.transformed.values.items()
        },
        "transformed_macro_accuracy": _d(
            weighted_interval(items.transformed, _per_group(items.transformed), **kw)
        ),
        "transformed_macro_drop": _d(weighted_interval(items.drops, _per_group(items.drops), **kw)),
        "cue_shift_in_spread": _d(mean_interval(*items.cue_shift, stratum="cue_shift", **kw)),
        "accuracy_cue_on_rejected": _d(
            mean_interval(*items.cue_on_rejected, stratum="cue_on_rejected", **kw)
        ),
    }


def differences(a: PerItem, b: PerItem, *, seed: int = 0, reps: int = DEFAULT_REPS) -> dict[str, Any]:
    """``b − a`` for the headline numbers, paired over the same pairs: each a ``Difference``'s
    dict (value, 95% interval, p-value, distinguishable from zero)."""
    kw = {"seed": seed, "reps": reps}

    def flat(x: Stratified) -> list[float]:
        return [v for vs in x.values.values() for v in vs]

    def both(get: Any) -> dict[str, Any] | None:
        (va, ua), (vb, _) = get(a), get(b)
        d = paired_difference(va, vb, ua, **kw)
        return None if d is None else d.as_dict()

    out: dict[str, Any] = {
        "overall": both(lambda m: (flat(m.subsets), [u for us in m.subsets.units.values() for u in us])),
        "average": _d(weighted_difference(a.subsets, b.subsets, a.combine, **kw)),
        "categories": {
            c: _d(weighted_difference(a.subsets, b.subsets, {c: w}, **kw)) for c, w in a.combine.items()
        },
        "transformed_macro_accuracy": _d(
            weighted_difference(a.transformed, b.transformed, _per_group(a.transformed), **kw)
        ),
        "transformed_macro_drop": _d(weighted_difference(a.drops, b.drops, _per_group(a.drops), **kw)),
        "cue_shift_in_spread": both(lambda m: m.cue_shift),
        "accuracy_cue_on_rejected": both(lambda m: m.cue_on_rejected),
    }
    out["categories"] = {c: d for c, d in out["categories"].items() if d is not None}
    return out


def model_metrics(
    rows: Sequence[ScoredVariant],
    *,
    categories: Mapping[str, Sequence[str]],
    subset_weights: Mapping[str, float] | None = None,
    upweight_math: bool = True,
    shift_threshold: float = 0.25,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    items: PerItem | None = None,
) -> dict[str, Any]:
    """Every number of one model (see the module docstring), with ``intervals`` (from ``items``,
    ``per_item`` of the same rows, when the caller has them already)."""
    original = {(r.dataset, r.pair_id): r for r in rows if r.variant == ORIGINAL}
    by_variant: dict[str, list[ScoredVariant]] = defaultdict(list)
    for r in rows:
        if r.variant != ORIGINAL:
            by_variant[r.variant].append(r)
    report = category_report(
        subset_scores((r.subset, r.score_chosen, r.score_rejected) for r in original.values()),
        categories,
        subset_weights,
        upweight_math=upweight_math,
    )
    spread = std([s for r in original.values() for s in (r.score_chosen, r.score_rejected)])

    transformations: dict[str, Any] = {}
    for name, changed in sorted(by_variant.items()):
        if name in CUE_VARIANTS:
            continue
        clean = [original[(r.dataset, r.pair_id)] for r in changed]
        acc, acc_clean = _mean([r.outcome for r in changed]), _mean([r.outcome for r in clean])
        shift = reward_shift(
            [s for r in clean for s in (r.score_chosen, r.score_rejected)],
            [s for r in changed for s in (r.score_chosen, r.score_rejected)],
            spread,
            shift_threshold,
        )
        transformations[name] = {
            "pairs": len(changed),
            "accuracy": acc,
            "accuracy_untransformed": acc_clean,
            "drop": acc_clean - acc if acc is not None and acc_clean is not None else None,
            "shift": asdict(shift),
        }
    scored = [t for t in transformations.values() if t["pairs"]]
    out: dict[str, Any] = {
        "pairs": len(original),
        "subsets": {s: asdict(v) for s, v in report.subsets.items()},
        "categories": report.categories,
        "category_weights": report.weights,
        "average": report.average,
        "overall": report.overall,
        "unmapped_subsets": report.unmapped,
        "tie_rule": report.tie_rule,
        "ties": sum(v.ties for v in report.subsets.values()),
        "reward_spread": spread,
        "transformations": transformations,
        "transformed_macro_accuracy": _mean([t["accuracy"] for t in scored]),
        "transformed_macro_drop": _mean([t["drop"] for t in scored]),
    }
    on_rejected, on_chosen = by_variant.get(CUE_ON_REJECTED, []), by_variant.get(CUE_ON_CHOSEN, [])
    if on_rejected or on_chosen:
        before = [original[(r.dataset, r.pair_id)].score_rejected for r in on_rejected] + [
            original[(r.dataset, r.pair_id)].score_chosen for r in on_chosen
        ]
        after = [r.score_rejected for r in on_rejected] + [r.score_chosen for r in on_chosen]
        out["cue"] = {
            "shift": asdict(reward_shift(before, after, spread, shift_threshold)),
            "accuracy_cue_on_rejected": _mean([r.outcome for r in on_rejected]),
            "accuracy_clean": _mean([original[(r.dataset, r.pair_id)].outcome for r in on_rejected]),
            "pairs": len(on_rejected),
        }
    if items is None:
        items = per_item(
            rows, categories=categories, subset_weights=subset_weights, upweight_math=upweight_math
        )
    out["intervals"] = intervals(items, seed=seed, reps=reps)
    return out
