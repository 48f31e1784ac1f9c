"""Leakage of a rewrite: how much it changed besides the attribute it was asked to change. Pure.

A counterfactual is "leaky" (the paper's own named failure) when the rewrite also moves
spurious attributes: length, markdown and layout, wording. A reward model trained on
leaky pairs learns those cues again. For each rewrite this module measures:

- ``length_ratio``: rewrite characters over source characters;
- ``markdown_delta``: the number of markdown features (headings, bullets, numbered items,
  bold, code fences, table rows) added or removed;
- ``format_changed``: a kind of markdown feature present in one text and absent in the other;
- ``lexical_overlap``: unigram F1 between the two texts' words (ROUGE-1 F);
- ``embedding_similarity``: cosine of the two texts' sentence embeddings, when a stage
  computed them (None otherwise).

``summarise`` turns the per-row numbers into the manifest's summary; ``leak_reason``
applies the optional thresholds of ``LeakageLimits`` (all off by default: measure first,
then decide what to drop).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from crome_ray.augment.config import LeakageLimits
from crome_ray.text_similarity import cosine, unigram_f1

MARKDOWN = {
    "heading": re.compile(r"^\s{0,3}#{1,6}\s", re.MULTILINE),
    "bullet": re.compile(r"^\s*[-*+]\s+\S", re.MULTILINE),
    "numbered": re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE),
    "bold": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "code_fence": re.compile(r"^\s*```", re.MULTILINE),
    "table_row": re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE),
}


@dataclass(frozen=True)
class Leakage:
    length_ratio: float
    markdown_delta: int
    format_changed: bool
    lexical_overlap: float
    embedding_similarity: float | None = None

    def as_row(self) -> dict[str, float | int | bool | None]:
        return asdict(self)


def markdown_features(text: str) -> Counter[str]:
    return Counter({name: len(rx.findall(text)) for name, rx in MARKDOWN.items()})


def leakage(
    source: str,
    rewrite: str,
    source_embedding: Sequence[float] | None = None,
    rewrite_embedding: Sequence[float] | None = None,
) -> Leakage:
    fa, fb = markdown_features(source), markdown_features(rewrite)
    kinds = set(fa) | set(fb)
    return Leakage(
        length_ratio=round(len(rewrite) / max(len(source), 1), 4),
        markdown_delta=sum(abs(fa[k] - fb[k]) for k in kinds),
        format_changed=any((fa[k] > 0) != (fb[k] > 0) for k in kinds),
        lexical_overlap=round(unigram_f1(source, rewrite), 4),
        embedding_similarity=(
            round(float(cosine(source_embedding, rewrite_embedding)), 4)
            if source_embedding is not None and rewrite_embedding is not None
            else None
        ),
    )


def leak_reason(leak: Leakage, limits: LeakageLimits) -> str | None:
    """Why a rewrite counts as leaky under ``limits`` (None: it does not, or no limit is set)."""
    if limits.max_length_change is not None and abs(math.log(max(leak.length_ratio, 1e-6))) > math.log(
        1 + limits.max_length_change
    ):
        most = 1 + limits.max_length_change
        return f"length ratio {leak.length_ratio:.2f} outside 1/{most:g} to {most:g}"
    if limits.max_markdown_delta is not None and leak.markdown_delta > limits.max_markdown_delta:
        return f"{leak.markdown_delta} markdown features changed (limit {limits.max_markdown_delta})"
    if limits.min_lexical_overlap is not None and leak.lexical_overlap < limits.min_lexical_overlap:
        return f"lexical overlap {leak.lexical_overlap:.2f} below {limits.min_lexical_overlap:g}"
    if (
        limits.min_embedding_similarity is not None
        and leak.embedding_similarity is not None
        and leak.embedding_similarity < limits.min_embedding_similarity
    ):
        return (
            f"embedding similarity {leak.embedding_similarity:.2f} below {limits.min_embedding_similarity:g}"
        )
    return None


def _quantile(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def summarise(rows: Iterable[Leakage]) -> dict[str, dict[str, float]]:
    """Per metric: count, mean and the 10th, 50th and 90th percentiles (nearest rank);
    ``format_changed`` as the share of rewrites."""
    rows = list(rows)
    out: dict[str, dict[str, float]] = {}
    for name in ("length_ratio", "markdown_delta", "lexical_overlap", "embedding_similarity"):
        values = sorted(float(v) for r in rows if (v := getattr(r, name)) is not None)
        if values:
            out[name] = {
                "n": len(values),
                "mean": round(sum(values) / len(values), 4),
                "p10": _quantile(values, 0.1),
                "p50": _quantile(values, 0.5),
                "p90": _quantile(values, 0.9),
            }
    if rows:
        share = sum(r.format_changed for r in rows) / len(rows)
        out["format_changed"] = {"n": len(rows), "share": round(share, 4)}
    return out
