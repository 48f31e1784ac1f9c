"""What an evaluation scores: each pair as it is, after each transformation, and with a planted
cue; and the unique (prompt, answer) texts behind them, each scored once. Pure.

Many variants share texts (a prompt transformation keeps the answers' text but not the
prompt; the cue on the rejected side keeps the chosen answer as it is), so the scorer sees
each distinct ``(prompt, answer)`` once, keyed by ``text_key``, and the variants are put back
together from the keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from crome_ray.cue import plant_cue
from crome_ray.evaluate.transforms import Transformation, applies, transform_pair

ORIGINAL = "original"
CUE_ON_REJECTED = "cue_on_rejected"  # the cue planted on the rejected answer: does it flip the pair?
CUE_ON_CHOSEN = "cue_on_chosen"  # and on the chosen one (the shift is measured on every answer)
CUE_VARIANTS = (CUE_ON_REJECTED, CUE_ON_CHOSEN)


@dataclass(frozen=True)
class EvalPair:
    dataset: str  # the data set's run name
    pair_id: str
    subset: str
    prompt: str
    chosen: str
    rejected: str
    benchmark: str | None = None  # JSON: a benchmark group's metadata (``evaluate.benchmarks``)


@dataclass(frozen=True)
class Variant:
    dataset: str
    pair_id: str
    subset: str
    variant: str  # ORIGINAL, a transformation's name, or a CUE_* probe
    prompt: str
    chosen: str
    rejected: str

    @property
    def chosen_key(self) -> str:
        return text_key(self.prompt, self.chosen)

    @property
    def rejected_key(self) -> str:
        return text_key(self.prompt, self.rejected)


def text_key(prompt: str, response: str) -> str:
    """The identity of one text to score (a prompt and an answer)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(prompt.encode("utf-8", "surrogatepass"))
    h.update(b"\x00\x1f\x00")
    h.update(response.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def variants_of(
    pair: EvalPair,
    transformations: Sequence[Transformation],
    *,
    seed: int,
    cue: str | None = None,
    cue_position: str = "end",
) -> Iterator[Variant]:
    """The pair itself, each transformation that applies to it, then the cue probes."""

    def v(name: str, p: str, c: str, r: str) -> Variant:
        return Variant(pair.dataset, pair.pair_id, pair.subset, name, p, c, r)

    yield v(ORIGINAL, pair.prompt, pair.chosen, pair.rejected)
    key = f"{pair.dataset}/{pair.pair_id}"
    for t in transformations:
        if applies(t, pair.prompt, pair.chosen, pair.rejected):
            yield v(t.name, *transform_pair(t, pair.prompt, pair.chosen, pair.rejected, seed=seed, key=key))
    if cue:
        yield v(CUE_ON_REJECTED, pair.prompt, pair.chosen, plant_cue(pair.rejected, cue, cue_position))  # type: ignore[arg-type]
        yield v(CUE_ON_CHOSEN, pair.prompt, plant_cue(pair.chosen, cue, cue_position), pair.rejected)  # type: ignore[arg-type]


def unique_texts(variants: Iterable[Variant]) -> dict[str, tuple[str, str]]:
    """``text_key -> (prompt, answer)`` for every text the variants need scored, once each."""
    out: dict[str, tuple[str, str]] = {}
    for v in variants:
        out.setdefault(v.chosen_key, (v.prompt, v.chosen))
        out.setdefault(v.rejected_key, (v.prompt, v.rejected))
    return out
