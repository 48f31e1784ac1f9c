"""Code-level checks on a rewrite, run before any verifier call: near copies, length, language, format. Pure.

Small oracles often hand the source back unchanged, or nearly so, and then verify that
"rewrite" as Pass (measured: ``docs/local_models.md``, and
``bench/local_models.py``). Paying a verifier to judge those is waste, and trusting it
would put ties labelled as preferences in the training set. So each rewrite is checked
in code first, and a rejection names its reason:

- ``near_copy``: the same text once whitespace is normalised, or edit similarity (2·LCS / total length)
  at or above ``max_similarity`` (causal rewrites: 0.995, since a counterfactual is a small
  edit by design) or ``max_similarity_neutral`` (CAN, PARA: 0.95);
- ``length``: the rewrite's length outside ``[min_length_ratio, max_length_ratio]`` times
  the source's, and more than ``length_slack_chars`` away from it (a one-word answer may
  grow into a sentence);
- ``language``: another writing system than the source's (Latin, Cyrillic, Han, ...), or
  an English source answered in something that is not English; code (fenced blocks and
  inline spans) is left out of both measures;
- ``format``: commentary about the rewrite instead of an answer ("Here is the rewritten
  response: ..."), or a JSON object where the source was prose;
- ``delimiters`` (always on): the prompt's fence markers or key in the text, which no
  answer of the data set holds and a rewrite only holds by copying the prompt.

The language check is a profile written here (Unicode script of the letters, and the
share of common English words), not a language-identification library: the question is
only "the same language as the source?", which that answers without a model or a new
dependency.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter

from crome_ray.augment.config import RewriteChecks
from crome_ray.text_similarity import edit_similarity

_ENGLISH_WORDS = (
    "the a an and or of to in is are was were be it that this for on with as at by from not "
    "you your we our they their he she his her i my can will would should do does if but so "
    "there which what when how all any more most some no yes also than then these those"
)
ENGLISH = frozenset(_ENGLISH_WORDS.split())
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# commentary about the rewrite, on its first line: "Here is the revised answer:", "Sure! The
# rewritten response:", "New response:"; not "Here's how: ..." or "Sure! Boil the water first."
REWRITE_WORDS = r"(?:re-?writ\w*|revis\w*|modif\w*|updat\w*|degrad\w*|improv\w*|paraphras\w*)"
COMMENTARY = re.compile(
    r"^[\s*#_]*(?:"
    rf"(?:here(?:'s| is| are)|sure|certainly|okay|of course)\b[^\n]{{0,60}}\b{REWRITE_WORDS}"
    rf"|(?:the |a |my )?(?:{REWRITE_WORDS}|new) (?:response|answer|version|text)\b"
    r"|(?:new response|rewrite|response|answer)\s*:)",
    re.IGNORECASE,
)
CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)
MARKERS = ("<<<BEGIN ", "<<<END ")
ASCII_LETTER = re.compile(r"[A-Za-z]")
NON_ASCII = re.compile(r"[^\x00-\x7f]")


def script_of(text: str) -> str | None:
    """The writing system most of the text's letters are in (LATIN, CYRILLIC, CJK, ...); None
    for fewer than 20 letters."""
    counts: Counter[str] = Counter()
    ascii_letters = len(ASCII_LETTER.findall(text))  # counted in C: most answers are mostly ASCII
    if ascii_letters:
        counts["LATIN"] = ascii_letters
    for ch in NON_ASCII.findall(text):
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[name.split(" ", 1)[0] if name else "OTHER"] += 1
    if sum(counts.values()) < 20:
        return None
    script = counts.most_common(1)[0][0]
    return "CJK" if script in ("CJK", "HIRAGANA", "KATAKANA") else script


def english_share(text: str) -> tuple[float, int]:
    """The share of words that are common English words, and the number of words."""
    words = [w.lower() for w in WORD.findall(text)]
    return (sum(w in ENGLISH for w in words) / len(words) if words else 0.0), len(words)


def prose(text: str) -> str:
    """The text without its code (fenced blocks, inline spans)."""
    return CODE.sub(" ", text)


def language_problem(source: str, rewrite: str) -> str | None:
    source, rewrite = prose(source), prose(rewrite)
    a, b = script_of(source), script_of(rewrite)
    if a and b and a != b:
        return f"written in {b.lower()} script, the source in {a.lower()}"
    (src_share, src_words), (rw_share, rw_words) = english_share(source), english_share(rewrite)
    if src_words >= 30 and rw_words >= 30 and src_share >= 0.15 and rw_share < 0.05:
        return f"not English like its source ({rw_share:.0%} common English words against {src_share:.0%})"
    return None


def _is_json_object(text: str) -> bool:
    t = text.strip()
    if not (t.startswith("{") and t.endswith("}")):
        return False
    try:
        return isinstance(json.loads(t), dict)
    except json.JSONDecodeError:
        return False


def format_problem(source: str, rewrite: str) -> str | None:
    if COMMENTARY.match(rewrite) and not COMMENTARY.match(source):
        return f"starts with commentary, not an answer ({rewrite.strip()[:40]!r})"
    if _is_json_object(rewrite) and not _is_json_object(source):
        return "a JSON object where the source is prose"
    return None


def delimiter_problem(source: str, rewrite: str, fences: tuple[str, ...] = ()) -> str | None:
    for marker in (*fences, *MARKERS):
        if marker and marker in rewrite and marker not in source:
            return "contains the prompt's delimiters"
    return None


def normalised(text: str) -> str:
    return " ".join(text.split())


def rewrite_problem(
    source: str,
    rewrite: str,
    checks: RewriteChecks,
    fences: tuple[str, ...] = (),
    *,
    neutral: bool = False,
) -> tuple[str, str] | None:
    """Why the rewrite must not reach the verifier, as ``(check, reason)``; None when it may.
    ``neutral``: a CAN or PARA rewrite (held to the lower similarity bound)."""
    if not rewrite.strip():
        return "empty", "the rewrite is empty"
    if problem := delimiter_problem(source, rewrite, fences):
        return "delimiters", problem
    ratio = len(rewrite) / max(len(source), 1)
    within_slack = abs(len(rewrite) - len(source)) <= checks.length_slack_chars
    if not within_slack and not checks.min_length_ratio <= ratio <= checks.max_length_ratio:
        return "length", (
            f"{len(rewrite)} characters against the source's {len(source)} (ratio {ratio:.2f}, "
            f"allowed {checks.min_length_ratio:g} to {checks.max_length_ratio:g})"
        )
    if normalised(source) == normalised(rewrite):
        return "near_copy", "the source handed back unchanged (whitespace aside)"
    limit = checks.max_similarity_neutral if neutral else checks.max_similarity
    sim = edit_similarity(source, rewrite)
    if sim >= limit:
        return "near_copy", f"a near copy of its source (similarity {sim:.3f} >= {limit:g})"
    if checks.language and (problem := language_problem(source, rewrite)):
        return "language", problem
    if checks.format and (problem := format_problem(source, rewrite)):
        return "format", problem
    return None
