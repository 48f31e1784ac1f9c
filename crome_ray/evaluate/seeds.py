"""Models trained per seed, side by side: the spread across seeds next to the difference between
models. Pure: each model's per-seed numbers and per-item values in, a JSON-ready dict out.

- **Across seeds**, per model and headline number: the mean, the standard deviation across
  seeds (n − 1), the range, and each seed's value; the mean with its 95% interval over prompts
  (the bootstrap of the per-item values averaged over the seeds: which pairs were drawn).
- **Between models**: each model minus the first, on the seed means, paired over the same pairs
  (``metrics.differences`` of the seed-averaged per-item values).
- **Between seeds**: within each model, every two seeds' paired difference on the same pairs:
  how far a reseed alone moves each number. The largest of them (in size) is what the between-
  model difference has to exceed before it is more than training noise.

A model with one run (not a training run: an HF id, a model folder) has one seed; it is compared
all the same, and has no between-seed row.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import combinations
from typing import Any

from crome_ray.evaluate.intervals import DEFAULT_REPS, Stratified
from crome_ray.evaluate.metrics import PerItem, differences, intervals

SEED_METRICS = (
    "average",
    "overall",
    "transformed_macro_accuracy",
    "transformed_macro_drop",
    "cue_shift_in_spread",
    "accuracy_cue_on_rejected",
)


def seed_label(label: str, seed: int) -> str:
    """The label of a model's run at another seed than its own (the scores table's model)."""
    return f"{label}@seed{seed}"


def across(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean, standard deviation (n − 1; 0 for one value), range and the values themselves."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return {
        "mean": statistics.fmean(xs),
        "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "values": xs,
    }


def _mean_lists(lists: Sequence[Sequence[float]]) -> list[float]:
    if len({len(x) for x in lists}) > 1:
        raise ValueError("the seeds were scored on different items")
    return [statistics.fmean(v) for v in zip(*lists, strict=True)]


def _mean_stratified(xs: Sequence[Stratified]) -> Stratified:
    first = xs[0]
    if any(x.units != first.units for x in xs[1:]):
        raise ValueError("the seeds were scored on different items")
    return Stratified({k: _mean_lists([x.values[k] for x in xs]) for k in first.values}, first.units)


def _mean_values(xs: Sequence[tuple[list[float], list[str]]]) -> tuple[list[float], list[str]]:
    if any(x[1] != xs[0][1] for x in xs[1:]):
        raise ValueError("the seeds were scored on different items")
    return _mean_lists([x[0] for x in xs]), xs[0][1]


def mean_items(items: Sequence[PerItem]) -> PerItem:
    """The per-item values averaged over a model's seeds (item for item: the seeds were scored on
    the same pairs). Its accuracies are the means of the seeds' accuracies."""
    if not items:
        raise ValueError("no seeds to average")
    if len(items) == 1:
        return items[0]
    first = items[0]
    return replace(
        first,
        subsets=_mean_stratified([i.subsets for i in items]),
        spread=statistics.fmean(i.spread for i in items),
        transformed=_mean_stratified([i.transformed for i in items]),
        drops=_mean_stratified([i.drops for i in items]),
        shifts={t: _mean_values([i.shifts[t] for i in items]) for t in first.shifts},
        cue_shift=_mean_values([i.cue_shift for i in items]),
        cue_on_rejected=_mean_values([i.cue_on_rejected for i in items]),
        cue_clean=_mean_values([i.cue_clean for i in items]),
    )


def _largest(diffs: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, Any] | None:
    """The seed pair whose difference in ``key`` is largest in size, with that difference."""
    found = [(pair, d[key]) for pair, d in diffs.items() if d.get(key)]
    if not found:
        return None
    pair, d = max(found, key=lambda x: abs(x[1]["value"]))
    return {**d, "seeds": pair}


def seed_report(
    models: Mapping[str, Sequence[tuple[int | None, Mapping[str, Any], PerItem]]],
    *,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
) -> dict[str, Any]:
    """``models``: label -> its runs as (seed, headline numbers, per-item values), its own seed
    first; the first label is the one the others are compared with."""
    labels = list(models)
    kw = {"seed": seed, "reps": reps}
    means = {label: mean_items([it for _, _, it in runs]) for label, runs in models.items()}
    out: dict[str, Any] = {"models": {}, "between_seeds": {}}
    for label, runs in models.items():
        out["models"][label] = {
            "seeds": [s for s, _, _ in runs],
            "metrics": {k: across([h.get(k) for _, h, _ in runs]) for k in SEED_METRICS},
            "mean_intervals": {k: v for k, v in intervals(means[label], **kw).items() if k in SEED_METRICS},
        }
        pairs = {f"{sb} − {sa}": differences(a, b, **kw) for (sa, _, a), (sb, _, b) in combinations(runs, 2)}
        if pairs:
            out["between_seeds"][label] = {
                "pairs": pairs,
                "largest": {k: _largest(pairs, k) for k in SEED_METRICS},
            }
    first = labels[0]
    out["between_models"] = {
        "baseline": first,
        "models": {b: differences(means[first], means[b], **kw) for b in labels[1:]},
    }
    return out


def manifest_seeds(report: Mapping[str, Any]) -> dict[str, Any]:
    """The seed report as the manifest keeps it (what the terminal and the self-check's verdict
    read): every model's numbers, the gaps between models, and each model's largest reseed move
    per metric; the seed-to-seed pairs themselves stay in report.json."""
    return {
        "models": report["models"],
        "between_models": report["between_models"],
        "between_seeds": {m: {"largest": x["largest"]} for m, x in report["between_seeds"].items()},
    }


def beyond_seed_noise(report: Mapping[str, Any], model: str, key: str) -> bool | None:
    """Whether ``model``'s difference from the baseline in ``key`` is distinguishable from zero
    and larger in size than every reseed of either model moved it. None: nothing to compare."""
    d = (report["between_models"]["models"].get(model) or {}).get(key)
    if not d:
        return None
    noise = [
        abs(largest["value"])
        for label in (report["between_models"]["baseline"], model)
        if (largest := ((report["between_seeds"].get(label) or {}).get("largest") or {}).get(key))
    ]
    if not noise:
        return None
    return bool(d["distinguishable"]) and abs(d["value"]) > max(noise)
