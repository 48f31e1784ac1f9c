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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crome_ray.evaluate.categories import category_report, pair_outcome, subset_scores
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

    @property
    def outcome(self) -> float:
        return pair_outcome(self.score_chosen, self.score_rejected)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def model_metrics(
    rows: Sequence[ScoredVariant],
    *,
    categories: Mapping[str, Sequence[str]],
    subset_weights: Mapping[str, float] | None = None,
    upweight_math: bool = True,
    shift_threshold: float = 0.25,
) -> dict[str, Any]:
    """Every number of one model (see the module docstring)."""
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
    return out
