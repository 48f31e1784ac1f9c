"""What the planted-attribute self-check says, read from its evaluation. Pure.

Three RMs trained on the same planted pairs are compared on the held-out pairs with the
attribute planted (the evaluation's cue probe): the reward the attribute adds, in spreads of the
untransformed answers' rewards, and the accuracy with it on the rejected answer. The verdict
answers three questions in order, each with its interval:

1. Did the baseline learn the attribute? (its shift's interval above zero). If not, the check
   says nothing at this size: nothing was there for Crome to remove.
2. Can the trainer and loss remove it? The positive control against the baseline: the share of
   the baseline's shift it removes, and whether that difference is distinguishable from zero.
3. How much of that does the oracle's data deliver? Crome as configured against the baseline,
   and its reduction as a share of the control's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SHIFT = "cue_shift_in_spread"
ON_REJECTED = "accuracy_cue_on_rejected"


@dataclass(frozen=True)
class Verdict:
    learned: bool  # the baseline's shift is above zero (its interval excludes it)
    removed_by_control: float | None  # share of the baseline's shift the control removes
    control_distinguishable: bool  # the control's shift differs from the baseline's (paired)
    removed_by_crome: float | None
    crome_distinguishable: bool
    crome_of_control: float | None  # Crome's reduction as a share of the control's
    lines: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shift(models: dict[str, Any], label: str) -> dict[str, Any] | None:
    return (models[label].get("intervals") or {}).get(SHIFT)


def _span(x: dict[str, Any] | None, digits: int = 2) -> str:
    if not x:
        return "–"
    return f"{x['value']:+.{digits}f} [{x['low']:+.{digits}f}, {x['high']:+.{digits}f}]"


def _sd(seeds: dict[str, Any] | None, label: str) -> str:
    """`` (± 0.31 across 3 seeds)``: the shift's standard deviation across the model's seeds."""
    x = ((((seeds or {}).get("models") or {}).get(label) or {}).get("metrics") or {}).get(SHIFT)
    return f" (± {x['sd']:.2f} across {x['n']} seeds)" if x and x["n"] > 1 else ""


def verdict(
    details: dict[str, Any], baseline: str = "baseline", crome: str = "crome", control: str = "control"
) -> Verdict:
    """The self-check's verdict from an evaluation's details (its ``models`` and ``differences``
    against ``baseline``, the first model). With the RMs trained per seed (its ``seeds``), the
    verdict is on the means over the seeds, each shift with its spread across them."""
    models = details["models"]
    diffs = (details.get("differences") or {}).get("models") or {}
    lines = []
    seeds = details.get("seeds")
    if seeds:  # the seed means: their intervals and paired differences
        models = {label: {"intervals": m["mean_intervals"]} for label, m in seeds["models"].items()}
        diffs = seeds["between_models"]["models"]
        listed = sorted({s for m in seeds["models"].values() for s in m["seeds"] if s is not None})
        lines.append(f"on the means over training seeds {', '.join(map(str, listed))}:")
    base = _shift(models, baseline)
    if base is None:
        raise ValueError("the evaluation has no cue shift: the self-check needs evaluate.cue on")
    learned = base["low"] > 0
    lines.append(f"the baseline's reward for the attribute: {_span(base)} spreads{_sd(seeds, baseline)}")
    if not learned:
        lines.append(
            "the baseline did not learn the attribute (its interval is not above zero): at this size the "
            "check says nothing; train longer (max_steps) or plant it on more pairs (selfcheck.share)"
        )

    def against(label: str) -> tuple[float | None, bool]:
        shift, d = _shift(models, label), (diffs.get(label) or {}).get(SHIFT)
        if shift is None or d is None:
            return None, False
        removed = 1 - shift["value"] / base["value"] if base["value"] > 0 else None
        share = "" if removed is None else f" ({removed:.0%} of the baseline's removed)"
        mark = "distinguishable from zero" if d["distinguishable"] else "not distinguishable from zero"
        lines.append(
            f"{label}: {_span(shift)} spreads{_sd(seeds, label)}{share}; "
            f"against the baseline {_span(d)}, {mark}"
        )
        return removed, bool(d["distinguishable"])

    by_control, control_sure = against(control)
    by_crome, crome_sure = against(crome)
    if learned and by_control is not None:
        if control_sure and by_control > 0:
            lines.append("the trainer and loss can remove the attribute here (the positive control)")
        else:
            lines.append(
                "even exact neutral ties did not remove the attribute distinguishably: look at λ "
                "(loss.tie_weight), the steps and the learning rate before trusting Crome's data"
            )
    of_control = None
    if learned and by_control and by_crome is not None and by_control > 0:
        of_control = by_crome / by_control
        if by_crome > 0:
            lines.append(f"Crome as configured delivers {of_control:.0%} of the control's reduction")
        else:
            lines.append("Crome as configured did not reduce the attribute's shift (its data added none of "
                         "the control's reduction)")  # fmt: skip
    for label in (baseline, control, crome):
        acc = (models.get(label, {}).get("intervals") or {}).get(ON_REJECTED)
        if acc:
            lines.append(f"{label}: accuracy with the attribute on the rejected answer {_span(acc, 3)}")
    return Verdict(learned, by_control, control_sure, by_crome, crome_sure, of_control, tuple(lines))
