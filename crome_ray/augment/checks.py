"""Code-level checks on a rewrite, run before any verifier call: near copies, length, placeholders,
echoes of the instruction, language, format, and for the neutrals their meaning. Pure.

Small oracles often hand the source back unchanged, or nearly so, and then verify that
"rewrite" as Pass (measured: ``docs/local_models.md``, and
``bench/local_models.py``); or they answer a rewrite task with a word of the task
("rewrite", "revised") or a comment on it ("The paraphrase is the new answer and nothing
more."). Paying a verifier to judge those is waste, and trusting it would put ties between
an answer and a placeholder into the training set. So each rewrite is checked in code
first, and a rejection names its check:

- ``length``: shorter than ``min_length_ratio`` × its source less ``shrink_slack_chars``, or
  longer than ``max_length_ratio`` × its source plus ``grow_slack_chars``: the slack is
  small where the rewrite shrinks (a 300-character answer cannot become one word) and
  larger where it grows (a one-word answer may become a sentence);
- ``placeholder``: at most ``max_placeholder_words`` words where the text it answers to (its
  source, and for CAN also A, whose content it must carry) is a sentence or more
  (``sentence_words``);
- ``near_copy``: the same text once whitespace is normalised, or edit similarity (2·LCS / total length)
  at or above ``max_similarity`` (causal rewrites: 0.995, since a counterfactual is a small
  edit by design) or ``max_similarity_neutral`` (CAN, PARA: 0.95); a CAN rewrite that is a
  near copy of A (not B rewritten) too;
- ``echo``: ``max_echo_share`` or more of its content words are words of the rewrite
  instructions (``prompts.INSTRUCTIONS``: "rewrite", "paraphrase", "answer", "content", ...) or
  words about rewriting ("revised", "rephrased", "repeats", ...), or for a causal rewrite the
  words of the attribute it was asked to change, that neither the request, A nor the source
  uses;
- ``repetition``: its share of repeated word 4-grams exceeds its source's by
  ``max_repetition_gain`` (a small model looping on one sentence until its token limit);
- ``language``: another writing system than the source's (Latin, Cyrillic, Han, ...), or
  an English source answered in something that is not English; code (fenced blocks and
  inline spans) is left out of both measures;
- ``format``: commentary about the rewrite instead of an answer, at its start ("Here is the
  rewritten response: ...", "Paraphrase: ...") or in a sentence about the task anywhere in
  its opening ("The original answer was rephrased ...", "I have rewritten ...", "I cannot
  paraphrase ..."), where the source holds no such sentence; or a JSON object where the
  source was prose;
- ``delimiters`` (always on): the prompt's fence markers or key in the text, which no
  answer of the data set holds and a rewrite only holds by copying the prompt;
- ``meaning`` (CAN and PARA, ``neutral_problem``): the rewrite must say what A says. With the
  augmentation's embedder, the MiniLM cosine to A at least ``min_neutral_similarity``;
  without it, the unigram F1 with A at least ``min_neutral_overlap``. Measured on the
  UltraFeedback sample (``bench/neutral_thresholds.py``, docs/augmentation.md): 0.4 keeps
  78% of other answers to the same request, 0.3% of answers to random other requests and
  none of the placeholders.

The language check is a profile written here (Unicode script of the letters, and the
share of common English words), not a language-identification library: the question is
only "the same language as the source?", which that answers without a model or a new
dependency. The echo and commentary checks are word lists and patterns for the same
reason: the forms are few and known (tests/fixtures/junk_rewrites.jsonl holds the ones seen).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter

from crome_ray.augment.config import RewriteChecks
from crome_ray.augment.prompts import INSTRUCTIONS
from crome_ray.text_similarity import edit_similarity, unigram_f1

_ENGLISH_WORDS = (
    "the a an and or of to in is are was were be it that this for on with as at by from not "
    "you your we our they their he she his her i my can will would should do does if but so "
    "there which what when how all any more most some no yes also than then these those"
)
ENGLISH = frozenset(_ENGLISH_WORDS.split())
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# commentary about the rewrite, on its first line: "Here is the revised answer:", "Sure! The
# rewritten response:", "New response:"; not "Here's how: ..." or "Sure! Boil the water first."
REWRITE_WORDS = (
    r"(?:re-?writ\w*|rewrote|revis\w*|modif\w*|updat\w*|degrad\w*|improv\w*|paraphras\w*|rephras\w*"
    r"|reword\w*)"
)
COMMENTARY = re.compile(
    r"^[\s*#_]*(?:"
    rf"(?:here(?:'s| is| are)|sure|certainly|okay|of course)\b[^\n]{{0,60}}\b{REWRITE_WORDS}"
    rf"|(?:the |a |my )?(?:{REWRITE_WORDS}|new) (?:response|answer|version|text)\b"
    rf"|(?:new response|rewrite|response|answer|{REWRITE_WORDS}(?: (?:response|answer|version|text))?)\s*:)",
    re.IGNORECASE,
)
TASK_VERBS = r"(?:re-?writ\w*|rewrote|rephras\w*|paraphras\w*|reword\w*|revis\w*)"
# a sentence about the task rather than an answer, anywhere in the opening: "The original answer
# was rephrased to ...", "I have rewritten the answer ...", "I cannot paraphrase this.", "This
# paraphrase keeps ..."
TASK_TALK = re.compile(
    r"\b(?:"
    rf"(?:the|this|my|your) (?:original|given|above|previous|initial|first) (?:answer|response|text|version)"
    rf" (?:was|is|has been|have been|had been) (?:\w+ly )?{REWRITE_WORDS}"
    rf"|I(?:'ve| have| had)? (?:\w+ly )?{TASK_VERBS}"
    r"|I (?:cannot|can't|can not|am unable to|won't|will not)"
    r" (?:re-?write|rephrase|paraphrase|revise|modify|reword)"
    rf"|(?:the|this|my) (?:{REWRITE_WORDS}|new answer|new response)(?: (?:answer|response|text|version))?"
    r" (?:is|was|keeps|retains|preserves|has|maintains|conveys)\b"
    r")",
    re.IGNORECASE,
)
TALK_CHARS = 300  # how much of a rewrite's opening the task-talk pattern reads
# words about rewriting that the instructions do not use but small oracles answer with
META_WORDS = re.compile(
    rf"^(?:{REWRITE_WORDS}|repeat\w*|original\w*|version\w*|response\w*|placeholder\w*|same|above|n|na)$"
)
HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")
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


def format_problem(source: str, rewrite: str, others: tuple[str, ...] = ()) -> str | None:
    """``others``: texts beside the source that may talk like this themselves (A, for CAN)."""
    if COMMENTARY.match(rewrite) and not COMMENTARY.match(source):
        return f"starts with commentary, not an answer ({rewrite.strip()[:40]!r})"
    if (talk := TASK_TALK.search(rewrite[:TALK_CHARS])) and not any(
        TASK_TALK.search(t[:TALK_CHARS]) for t in (source, *others)
    ):
        return f"talks about the task, not an answer ({talk.group(0)[:60]!r})"
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


def words(text: str) -> list[str]:
    """Lower-cased words, a hyphen inside a word joined ("re-write" is "rewrite")."""
    return [w.lower() for w in WORD.findall(HYPHEN.sub("", text))]


# the instructions' words that say something about the task (not "its", "only", "better", ...)
GENERIC = frozenset(
    [
        "its",
        "other",
        "own",
        "every",
        "one",
        "only",
        "else",
        "everything",
        "s",
        "while",
        "clearly",
        "better",
        "worse",
        "different",
        "change",
    ]
)
INSTRUCTION_WORDS = frozenset(w for text in INSTRUCTIONS for w in words(text)) - ENGLISH - GENERIC


def placeholder_problem(rewrite: str, against: tuple[str, ...], checks: RewriteChecks) -> str | None:
    n = len(words(rewrite))
    if n > checks.max_placeholder_words:
        return None
    for text in against:
        if (m := len(words(text))) >= checks.sentence_words:
            return f"{n} word{'s' * (n != 1)} ({rewrite.strip()[:40]!r}) for a text of {m} words"
    return None


def echo_problem(
    rewrite: str, context: tuple[str, ...], checks: RewriteChecks, task_text: str = ""
) -> str | None:
    """The rewrite made of the instructions' words (or words about rewriting, or the words of
    ``task_text``: the attribute a causal rewrite was asked to change, its name and description)
    that ``context`` (the request, A, the source) does not use."""
    if checks.max_echo_share is None:
        return None
    content = [w for w in words(rewrite) if w not in ENGLISH]
    if not content:
        return None
    known = {w for text in context for w in words(text)}
    task = INSTRUCTION_WORDS | (set(words(task_text)) - ENGLISH - GENERIC)
    echoed = [w for w in content if w not in known and (w in task or META_WORDS.match(w))]
    share = len(echoed) / len(content)
    if share >= checks.max_echo_share:
        return f"{share:.0%} of its words are the task's own ({', '.join(sorted(set(echoed))[:6])})"
    return None


REPEAT_N = 4  # word n-grams the repetition check counts
REPEAT_MIN_GRAMS = 8  # a text shorter than this many n-grams is not judged


def repeated_share(text: str) -> tuple[float, int]:
    """The share of ``text``'s word 4-grams that repeat an earlier one, and how many it has."""
    w = words(text)
    grams = [tuple(w[i : i + REPEAT_N]) for i in range(len(w) - REPEAT_N + 1)]
    return (1 - len(set(grams)) / len(grams) if grams else 0.0), len(grams)


def repetition_problem(
    source: str, rewrite: str, checks: RewriteChecks, others: tuple[str, ...] = ()
) -> str | None:
    """The rewrite loops: its repeated 4-grams outnumber its source's by ``max_repetition_gain``
    (``others``: texts it may follow as well, A for CAN: the more repetitive one counts)."""
    if checks.max_repetition_gain is None:
        return None
    share, n = repeated_share(rewrite)
    if n < REPEAT_MIN_GRAMS:
        return None
    before = max(repeated_share(t)[0] for t in (source, *others))
    if share - before >= checks.max_repetition_gain:
        return (
            f"{share:.0%} of its word 4-grams repeat (its source: {before:.0%}): text written over and over"
        )
    return None


def neutral_problem(a: str, rewrite: str, checks: RewriteChecks, cosine: float | None = None) -> str | None:
    """A CAN or PARA rewrite that does not say what A says: its embedding ``cosine`` to A below
    ``min_neutral_similarity``; without an embedding, its unigram F1 with A below
    ``min_neutral_overlap``."""
    if cosine is not None:
        if checks.min_neutral_similarity is not None and cosine < checks.min_neutral_similarity:
            return f"not A's content (embedding cosine {cosine:.2f} < {checks.min_neutral_similarity:g})"
        return None
    f1 = unigram_f1(a, rewrite)
    if checks.min_neutral_overlap is not None and f1 < checks.min_neutral_overlap:
        return f"not A's content (word overlap F1 {f1:.2f} < {checks.min_neutral_overlap:g})"
    return None


def rewrite_problem(
    source: str,
    rewrite: str,
    checks: RewriteChecks,
    fences: tuple[str, ...] = (),
    *,
    neutral: bool = False,
    a: str | None = None,
    request: str = "",
    task_text: str = "",
) -> tuple[str, str] | None:
    """Why the rewrite must not reach the verifier, as ``(check, reason)``; None when it may.
    ``neutral``: a CAN or PARA rewrite (held to the lower similarity bound); ``a``: the answer
    whose content it must carry when that is not its source (CAN); ``request``: the example's
    request (its words are no echo); ``task_text``: the attribute a causal rewrite changes (its
    words are the task's own)."""
    if not rewrite.strip():
        return "empty", "the rewrite is empty"
    if problem := delimiter_problem(source, rewrite, fences):
        return "delimiters", problem
    if problem := length_problem(source, rewrite, checks):
        return "length", problem
    others = (a,) if a is not None and a != source else ()
    if problem := placeholder_problem(rewrite, (source, *others), checks):
        return "placeholder", problem
    if normalised(source) == normalised(rewrite):
        return "near_copy", "the source handed back unchanged (whitespace aside)"
    limit = checks.max_similarity_neutral if neutral else checks.max_similarity
    sim = edit_similarity(source, rewrite)
    if sim >= limit:
        return "near_copy", f"a near copy of its source (similarity {sim:.3f} >= {limit:g})"
    for other in others:  # CAN: A's content in B's style, not A handed back
        if normalised(other) == normalised(rewrite) or (sim := edit_similarity(other, rewrite)) >= limit:
            return "near_copy", f"a near copy of A, not B rewritten (similarity {sim:.3f} >= {limit:g})"
    if problem := echo_problem(rewrite, (request, source, *others), checks, task_text):
        return "echo", problem
    if problem := repetition_problem(source, rewrite, checks, others):
        return "repetition", problem
    if checks.language and (problem := language_problem(source, rewrite)):
        return "language", problem
    if checks.format and (problem := format_problem(source, rewrite, others)):
        return "format", problem
    return None


def length_problem(source: str, rewrite: str, checks: RewriteChecks) -> str | None:
    n, m = len(rewrite), len(source)
    low = checks.min_length_ratio * m - checks.shrink_slack_chars
    high = checks.max_length_ratio * m + checks.grow_slack_chars
    if low <= n <= high:
        return None
    return (
        f"{n} characters against the source's {m} (ratio {n / max(m, 1):.2f}; allowed {max(low, 0):.0f} "
        f"to {high:.0f}: {checks.min_length_ratio:g}× less {checks.shrink_slack_chars} to "
        f"{checks.max_length_ratio:g}× plus {checks.grow_slack_chars})"
    )


def junk_reason(kind: str, a: str, b: str, request: str = "", task_text: str = "") -> str | None:
    """The rule a committed pair of the augmentation must never meet: its rewritten side is a
    placeholder (at most two words) or made mostly of the task's words, while the other side
    is a sentence or more. ``causal_upgrade`` rewrites A; every other rewrite kind, B."""
    text, other = (a, b) if kind == "causal_upgrade" else (b, a)
    checks = RewriteChecks()
    return placeholder_problem(text, (other,), checks) or (
        echo_problem(text, (request, other), checks, task_text)
        if len(words(other)) >= checks.sentence_words
        else None
    )
