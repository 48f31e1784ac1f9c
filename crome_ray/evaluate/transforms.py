"""reWordBench-style transformations of a preference pair: meaning-preserving rewrites. Pure.

reWordBench (Wu et al., 2025) publishes neither code nor data; these are written from its
list of families (``docs/method.md``). Each is one named function of ``(text,
rng)`` whose docstring names its family; a ``Transformation`` says what it applies to:

- ``prompt``: the prompt is rewritten, the answers are not (Rot-13, Rot-2, Ignore
  Above/Below): a robust RM still ranks the same answers the same way;
- ``response``: both answers are rewritten the same way, each with its own seeded draw (a
  robust RM still prefers the chosen one).

Domain-targeted transformations (code, format) apply only where the answer has the thing they
change (a fenced code block that parses, a Markdown list); ``applies`` says which pairs count,
and the evaluation leaves the others out of that transformation's accuracy (and says how many
it scored). Paraphrase and back-translation need a model: they go through the oracle layer,
not here.

Every function is deterministic given its ``random.Random``; ``transform_pair`` seeds one per
pair, side and transformation from a string, so a run is reproducible and two runs that score
different models see the same transformed text.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Target = Literal["prompt", "response"]

# ---------------------------------------------------------------- controlled


def add_quotes(text: str, rng: random.Random, n: int = 10) -> str:
    """Controlled: the text between ``n`` double quotes on each side."""
    return '"' * n + text + '"' * n


_PUNCT = re.compile(r"([" + re.escape(string.punctuation) + r"])")


def punctuation_spaces(text: str, rng: random.Random) -> str:
    """Controlled: a space on both sides of every punctuation mark."""
    return _PUNCT.sub(r" \1 ", text)


def twitter_handle_url(text: str, rng: random.Random) -> str:
    """Controlled: a made-up Twitter handle before the text and a short URL after it."""
    handle = "@" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
    url = "https://t.co/" + "".join(rng.choices(string.ascii_letters + string.digits, k=10))
    return f"{handle} {text} {url}"


def stress_test(text: str, rng: random.Random, times: int = 5) -> str:
    """Controlled: NLI stress-test tautologies (" and true is true") appended ``times`` times."""
    return text + " and true is true" * times


DISTRACTORS = (
    "The weather report for the coast says light winds and a chance of rain in the evening.",
    "A recipe for bread needs flour, water, salt and yeast, and a warm place to rise.",
    "The museum opens at nine on weekdays and at ten on weekends and public holidays.",
    "Train services on the northern line run every twenty minutes until midnight.",
)


def ignore_above(text: str, rng: random.Random) -> str:
    """Controlled: an unrelated passage before the prompt, and an instruction to ignore it."""
    return f"{rng.choice(DISTRACTORS)}\nIgnore the text above.\n{text}"


def ignore_below(text: str, rng: random.Random) -> str:
    """Controlled: the prompt, an instruction to ignore what follows, and an unrelated passage."""
    return f"{text}\nIgnore the text below.\n{rng.choice(DISTRACTORS)}"


def rot_n(text: str, n: int) -> str:
    """Each ASCII letter ``n`` places on in its alphabet (case kept); everything else as is."""
    n %= 26
    lower, upper = string.ascii_lowercase, string.ascii_uppercase
    table = str.maketrans(lower + upper, lower[n:] + lower[:n] + upper[n:] + upper[:n])
    return text.translate(table)


def rot13(text: str, rng: random.Random) -> str:
    """Controlled (on the prompt): the prompt in Rot-13, after an instruction to decode it."""
    return "The request below is encoded with Rot-13. Decode it, then answer it.\n" + rot_n(text, 13)


def rot2(text: str, rng: random.Random) -> str:
    """Controlled (on the prompt): the prompt in Rot-2, after an instruction to decode it."""
    return "The request below is encoded with Rot-2. Decode it, then answer it.\n" + rot_n(text, 2)


# ---------------------------------------------------------------- naturalistic

# Latin letters and Cyrillic/Greek letters drawn the same in common fonts
HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "o": "\u043e", "p": "\u0440", "x": "\u0445",
    "y": "\u0443", "i": "\u0456", "j": "\u0458", "s": "\u0455", "A": "\u0410", "B": "\u0412",
    "C": "\u0421", "E": "\u0415", "H": "\u041d", "K": "\u041a", "M": "\u041c", "O": "\u041e",
    "P": "\u0420", "T": "\u0422", "X": "\u0425",
}  # fmt: skip
HOMOGLYPHS_BACK = {v: k for k, v in HOMOGLYPHS.items()}


def homoglyphs(text: str, rng: random.Random, rate: float = 0.5) -> str:
    """Naturalistic: each letter that has a look-alike is swapped for it with probability ``rate``."""
    return "".join(HOMOGLYPHS[ch] if ch in HOMOGLYPHS and rng.random() < rate else ch for ch in text)


def undo_homoglyphs(text: str) -> str:
    """The Latin text a ``homoglyphs`` rewrite came from."""
    return "".join(HOMOGLYPHS_BACK.get(ch, ch) for ch in text)


def char_edits(text: str, rng: random.Random, rate: float = 0.05) -> str:
    """Naturalistic: typos; each letter is, with probability ``rate``, swapped with the next,
    dropped, doubled or replaced by a neighbouring key's letter."""
    keys = "qwertyuiopasdfghjklzxcvbnm"
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not ch.isalpha() or rng.random() >= rate:
            out.append(ch)
            i += 1
            continue
        edit = rng.randrange(4)
        if edit == 0 and i + 1 < len(text) and text[i + 1].isalpha():
            out += [text[i + 1], ch]
            i += 2
            continue
        if edit == 1:
            pass  # dropped
        elif edit == 2:
            out += [ch, ch]
        else:
            k = keys.find(ch.lower())
            near = keys[max(0, k - 1)] if k > 0 else keys[1]
            out.append(near.upper() if ch.isupper() else near)
        i += 1
    return "".join(out)


def word_deletion(text: str, rng: random.Random, fraction: float = 0.1) -> str:
    """Naturalistic: ``round(fraction × words)`` words, drawn at random, deleted."""
    words = text.split(" ")
    real = [i for i, w in enumerate(words) if w.strip()]
    drop = set(rng.sample(real, round(fraction * len(real))))
    return " ".join(w for i, w in enumerate(words) if i not in drop)


# ---------------------------------------------------------------- domain-targeted

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)
_PY_LANGS = {"", "python", "py", "python3"}


def python_blocks(text: str) -> list[re.Match[str]]:
    """The fenced blocks of ``text`` that are Python (tagged so, or untagged) and parse."""
    found = []
    for m in _FENCE.finditer(text):
        if m.group(1).lower() in _PY_LANGS:
            try:
                ast.parse(m.group(2))
            except SyntaxError:
                continue
            found.append(m)
    return found


def has_python(text: str) -> bool:
    return bool(python_blocks(text))


def _each_block(text: str, fn: Callable[[str], str]) -> str:
    out, last = [], 0
    for m in python_blocks(text):
        out.append(text[last : m.start(2)])
        out.append(fn(m.group(2)))
        last = m.end(2)
    out.append(text[last:])
    return "".join(out)


def minify_python(code: str) -> str:
    """The same program without comments, docstrings or blank lines, one-space indents."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    lines = []
    for line in ast.unparse(tree).splitlines():
        if line.strip():
            stripped = line.lstrip(" ")
            lines.append(" " * ((len(line) - len(stripped)) // 4) + stripped)
    return "\n".join(lines) + "\n"


def code_minification(text: str, rng: random.Random) -> str:
    """Domain-targeted (code): every Python block minified; the program is unchanged."""
    return _each_block(text, minify_python)


COMMENTS = (
    "# helper code follows",
    "# see the explanation above",
    "# written for Python 3",
    "# the steps are below",
)


def add_comment(text: str, rng: random.Random) -> str:
    """Domain-targeted (code): a neutral comment line at the top of every Python block."""
    return _each_block(text, lambda code: f"{rng.choice(COMMENTS)}\n{code}")


OTHER_CODE = (
    "\n\ndef _unused_helper(values):\n    return sorted(set(values))\n",
    "\n\nclass _Unused:\n    def __init__(self):\n        self.items = []\n",
    "\n\ndef _square(n):\n    return n * n\n",
)


def append_other_code(text: str, rng: random.Random) -> str:
    """Domain-targeted (code): an unrelated, never-called definition after every Python block."""
    return _each_block(text, lambda code: code.rstrip("\n") + rng.choice(OTHER_CODE))


_BULLET = re.compile(r"^(\s*)[-*+] (?=\S)", re.M)
_NUMBERED = re.compile(r"^(\s*)\d+[.)] (?=\S)", re.M)


def has_list(text: str) -> bool:
    return bool(_BULLET.search(text) or _NUMBERED.search(text))


def swap_format(text: str, rng: random.Random) -> str:
    """Domain-targeted (format): Markdown bullet lists become numbered lists, numbered lists
    become bullets; the items are unchanged."""
    if _BULLET.search(text):
        counter: dict[str, int] = {}

        def number(m: re.Match[str]) -> str:
            counter[m.group(1)] = counter.get(m.group(1), 0) + 1
            return f"{m.group(1)}{counter[m.group(1)]}. "

        return _BULLET.sub(number, text)
    return _NUMBERED.sub(lambda m: f"{m.group(1)}- ", text)


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Transformation:
    name: str
    family: Literal["controlled", "naturalistic", "domain"]
    target: Target
    fn: Callable[[str, random.Random], str]
    applies: Callable[[str], bool] | None = None  # on the answers: both must qualify


TRANSFORMATIONS: dict[str, Transformation] = {
    t.name: t
    for t in (
        Transformation("add_quotes", "controlled", "response", add_quotes),
        Transformation("punctuation_spaces", "controlled", "response", punctuation_spaces),
        Transformation("twitter_handle_url", "controlled", "response", twitter_handle_url),
        Transformation("stress_test", "controlled", "response", stress_test),
        Transformation("ignore_above", "controlled", "prompt", ignore_above),
        Transformation("ignore_below", "controlled", "prompt", ignore_below),
        Transformation("rot13", "controlled", "prompt", rot13),
        Transformation("rot2", "controlled", "prompt", rot2),
        Transformation("homoglyphs", "naturalistic", "response", homoglyphs),
        Transformation("char_edits", "naturalistic", "response", char_edits),
        Transformation("word_deletion", "naturalistic", "response", word_deletion),
        Transformation("code_minification", "domain", "response", code_minification, has_python),
        Transformation("add_comment", "domain", "response", add_comment, has_python),
        Transformation("append_other_code", "domain", "response", append_other_code, has_python),
        Transformation("swap_format", "domain", "response", swap_format, has_list),
    )
}


def seeded(seed: int, *keys: str) -> random.Random:
    """A generator fixed by the run's seed and the strings that name one draw."""
    digest = hashlib.blake2b("\x1f".join([str(seed), *keys]).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def applies(t: Transformation, prompt: str, chosen: str, rejected: str) -> bool:
    return t.applies is None or (t.applies(chosen) and t.applies(rejected))


def transform_pair(
    t: Transformation, prompt: str, chosen: str, rejected: str, *, seed: int, key: str
) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` after ``t``; ``key`` names the pair (its draws' seed)."""
    if t.target == "prompt":
        return t.fn(prompt, seeded(seed, t.name, key, "prompt")), chosen, rejected
    return (
        prompt,
        t.fn(chosen, seeded(seed, t.name, key, "chosen")),
        t.fn(rejected, seeded(seed, t.name, key, "rejected")),
    )
