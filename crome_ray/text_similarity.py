"""How alike two texts are: word overlap, edit similarity, embedding cosine. Pure.

Below every layer that compares texts: the augmentation's code checks and leakage measures,
and the Gemini simulator's verifier (which must judge a rewrite the way a real one would)
use the same measures, so neither imports the other.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from rapidfuzz.distance import Indel

TOKEN = re.compile(r"\w+", re.UNICODE)
# longer texts are compared on their first part (the LCS is O(n·m/64) even in C++)
SIMILARITY_CHARS = 4000


def unigram_f1(a: str, b: str) -> float:
    """ROUGE-1 F: the harmonic mean of the shared words' share in each text (with counts)."""
    ca, cb = Counter(TOKEN.findall(a.lower())), Counter(TOKEN.findall(b.lower()))
    if not ca or not cb:
        return 1.0 if not ca and not cb else 0.0
    shared = sum((ca & cb).values())
    if shared == 0:
        return 0.0
    p, r = shared / sum(cb.values()), shared / sum(ca.values())
    return 2 * p * r / (p + r)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def edit_similarity(a: str, b: str) -> float:
    """2·LCS / (len a + len b) on the first ``SIMILARITY_CHARS`` of each text (1.0: identical):
    the measure difflib's ``ratio`` approximates, computed exactly by rapidfuzz's Indel distance
    in C++: 0.017 ms against difflib's 31 ms on near-copies of the sample's answers, with equal
    scores (``bench/near_copy.py``); on real rewrites difflib took 185 ms (a profile of the flow)."""
    return Indel.normalized_similarity(a[:SIMILARITY_CHARS], b[:SIMILARITY_CHARS])
