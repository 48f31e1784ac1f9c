"""The augmented pairs, built from an example and what the oracle wrote; the baseline filter's rule. Pure.

Every pair is a row of ``records.AUGMENTED_PAIR_SCHEMA``: response A in ``chosen``,
response B in ``rejected``, label ``chosen`` (A ≻ B) or ``tie``. The kinds, and which side
each text goes on, are the table in ``augment.kinds``.

The baseline filter (docs/method.md, step 5) keeps a pair where the baseline reward model is
uncertain or wrong: with p = P_base(B ≻ A), keep when |p − 1[y = B ≻ A] − ½·1[y = tie]| > τ.
Here A is always the preferred side of a non-tie, so the target is 0 for a preference and
½ for a tie.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from crome_ray.augment.kinds import PairKind
from crome_ray.augment.leakage import Leakage
from crome_ray.augment.prompts import Example
from crome_ray.records import LABELS, PreferencePair

SOURCE = "crome-augment"


@dataclass(frozen=True)
class Origin:
    """Where a pair's new text came from (nothing for pairs that need no oracle call)."""

    backend: str | None = None
    model: str | None = None
    cost_usd: float = 0.0
    request_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class AugmentedPair:
    pair: PreferencePair
    attribute: str | None = None
    origin: Origin = field(default_factory=Origin)
    iqn_method: str | None = None
    iqn_similarity: float | None = None
    leakage: Leakage | None = None
    baseline_p: float | None = None

    @property
    def kind(self) -> str:
        return self.pair.kind

    def to_row(self) -> dict[str, Any]:
        return {
            **self.pair.to_row(),
            "attribute": self.attribute,
            "backend": self.origin.backend,
            "model": self.origin.model,
            "cost_usd": self.origin.cost_usd,
            "request_keys": list(self.origin.request_keys),
            "iqn_method": self.iqn_method,
            "iqn_similarity": self.iqn_similarity,
            "leakage": json.dumps(asdict(self.leakage)) if self.leakage else None,
            "baseline_p": self.baseline_p,
        }


def _pair(ex: Example, prompt: str, a: str, b: str, label: str, kind: str) -> PreferencePair:
    return PreferencePair(
        prompt=prompt, chosen=a, rejected=b, source=SOURCE, source_id=ex.id, label=label, kind=kind
    )


def original(ex: Example) -> AugmentedPair:
    return AugmentedPair(_pair(ex, ex.question, ex.chosen, ex.rejected, "chosen", "original"))


def rewritten(
    kind: PairKind, ex: Example, rewrite: str, origin: Origin, leak: Leakage, attribute: str | None = None
) -> AugmentedPair:
    """The pair of a rewrite the oracle wrote, its texts placed as its kind says."""
    assert kind.pair is not None, f"{kind.name} is not written by the oracle"
    a, b = kind.pair(ex, rewrite)
    return AugmentedPair(_pair(ex, ex.question, a, b, kind.label, kind.name), attribute, origin, leakage=leak)


def neutral_iqn(ex: Example, other_request: str, method: str, similarity: float) -> AugmentedPair:
    pair = _pair(ex, other_request, ex.chosen, ex.rejected, "tie", "neutral_iqn")
    return AugmentedPair(pair, iqn_method=method, iqn_similarity=similarity)


def rrm(ex: Example, other: Example, third: Example, method: str, similarity: float) -> list[AugmentedPair]:
    """RRM's pairs for ``ex`` from answers written for two other requests: the chosen answer ≻ the
    other request's chosen answer, and the two other answers tie (all under ``ex``'s request)."""
    prefer = _pair(ex, ex.question, ex.chosen, other.chosen, "chosen", "rrm_prefer")
    tie = _pair(ex, ex.question, other.chosen, third.chosen, "tie", "rrm_tie")
    return [
        AugmentedPair(prefer, iqn_method=method, iqn_similarity=similarity),
        AugmentedPair(tie, iqn_method=method, iqn_similarity=similarity),
    ]


def filter_target(label: str) -> float:
    """The value of P_base(B ≻ A) that a baseline fully agreeing with the label would give."""
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {LABELS}")
    return 0.5 if label == "tie" else 0.0


def keep_after_filter(p_b_over_a: float, label: str, tau: float) -> bool:
    """docs/method.md step 5: keep where the baseline is uncertain or wrong (|p − target| > τ)."""
    return abs(p_b_over_a - filter_target(label)) > tau
