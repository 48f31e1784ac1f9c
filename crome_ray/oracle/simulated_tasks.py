"""What the Gemini simulator answers to the augmentation's tasks: content made from the prompt. Pure.

A generic schema-satisfying answer (random words) would let a pipeline test pass while
echoing nothing of its input. For the augmentation's schemas the simulator answers like a
(simple, deterministic) oracle instead, from the fenced data in the prompt:

- a rubric names attributes after real words of the REQUEST, with weights that sum to 1;
- causal elements quote phrases of ANSWER A and ANSWER B under the rubric's attribute names;
- a degradation garbles every second sentence of the answer (words reversed, some swapped
  for their opposites); an upgrade adds a justification after every sentence; CAN
  gives answer B answer A's sentences (paraphrased) after B's opening words; a paraphrase reverses the
  order of the sentences and swaps connectives. Each changes the text, so the code-level checks
  pass it, unless ``p_copy`` makes the simulator hand back the source unchanged, as small
  oracles do;
- a verification passes a rewrite that differs from its source and fails an unchanged one,
  unless ``p_false_pass`` makes it pass a control, so a run can measure its verifier; a
  neutral verification (``same_content``) passes a rewrite that shares most of ANSWER A's
  words and is not ANSWER B handed back, with the same ``p_false_pass``.

The evaluation's rewrites (``{"text": ...}`` of one fenced TEXT) are answered too:

- a paraphrase is the augmentation's (sentences reversed, connectives swapped);
- a translation into another language is a marked pivot text, ``[French] `` and the text with
  common English words swapped for that pivot's (``PIVOT_WORDS``); the translation back into
  English undoes the swap, drops the mark and words a few things differently (``DRIFT``), as a
  real round trip does. Text with none of those words comes back as it went.

Tasks are recognised by their schema's shape and the prompt's wording, not by importing the
augmentation or evaluation packages (the oracle layer sits below them). Anything else gets
``None``: the simulator's generic answer.
"""

from __future__ import annotations

import random
import re
from typing import Any

from crome_ray.text_similarity import unigram_f1

FENCE = re.compile(r"<<<BEGIN ([A-Z ]+?) ([0-9a-f]{12})>>>\n(.*?)\n<<<END \1 \2>>>", re.DOTALL)
WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_STOP_WORDS = (
    "what which when where there their about would could should these those this that with from have "
    "your into than then them they been were will does make made some more most many much also just "
    "like only over such very write explain give tell please using used want need"
)
STOP = frozenset(_STOP_WORDS.split())
WRONG = {
    "is": "is not", "are": "are not", "can": "cannot", "more": "less", "increase": "decrease",
    "true": "false", "always": "never", "before": "after", "larger": "smaller", "first": "last",
}  # fmt: skip
UPGRADE = "This was checked against the question."
CONNECTIVES = {"Also": "In addition", "However": "Still", "So": "Therefore", "Then": "Next", "But": "Yet"}


def fenced_blocks(prompt: str) -> dict[str, str]:
    return {m.group(1): m.group(3) for m in FENCE.finditer(prompt)}


def task_text(prompt: str) -> str:
    """The prompt after its last fence: the task itself, never the data (whose words could
    look like a task's)."""
    ends = [m.end() for m in FENCE.finditer(prompt)]
    return prompt[ends[-1] :] if ends else prompt


def _rubric(blocks: dict[str, str], items: dict, rng: random.Random) -> dict:
    n = int(items.get("minItems", 3))
    words = []
    for w in WORD.findall(blocks.get("REQUEST", "")):
        if w.lower() not in STOP and w.lower() not in (x.lower() for x in words):
            words.append(w)
    generic = ["accuracy", "completeness", "clarity", "relevance", "safety", "concision", "format"]
    taken = {w.lower() for w in words}
    names = (words + [g for g in generic if g not in taken])[:n]
    raw = [rng.uniform(0.5, 2.0) for _ in names]
    weights = [round(r / sum(raw), 3) for r in raw]
    weights[-1] = round(1 - sum(weights[:-1]), 3)
    return {
        "attributes": [
            {"name": name, "description": f"How well the answer handles {name}.", "weight": w}
            for name, w in zip(names, weights, strict=True)
        ]
    }


def _elements(blocks: dict[str, str], schema: dict, rng: random.Random) -> dict:
    item = schema["properties"]["elements"]["items"]["properties"]
    names = item["attribute"]["enum"]
    out = []
    for name in names:
        for answer in ("A", "B"):
            sentences = [s.strip() for s in _sentences(blocks.get(f"ANSWER {answer}", "")) if s.strip()]
            if sentences:
                out.append(
                    {
                        "attribute": name,
                        "answer": answer,
                        "element": rng.choice(sentences)[:150],
                        "effect": "increases" if answer == "A" else "decreases",
                    }
                )
    return {"elements": out[: schema["properties"]["elements"].get("maxItems", len(out))]}


def _sentences(text: str) -> list[str]:
    """Sentences with the whitespace after each kept on it, so joining them keeps the layout."""
    parts = re.split(r"(?<=[.!?])(\s+)", text.strip())
    return ["".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]


def _garble(sentence: str) -> str:
    """A sentence made wrong: its words in reverse order, known words swapped for their opposites."""
    body = sentence.rstrip()
    words = [WRONG.get(w, w) for w in body.split(" ")]
    return " ".join(reversed(words)) + sentence[len(body) :]


def _degrade(text: str) -> str:
    """Every second sentence garbled: worse in substance, the same length and layout."""
    return "".join(_garble(s) if i % 2 else s for i, s in enumerate(_sentences(text))).strip()


def _upgrade(text: str) -> str:
    """A justification after every sentence: better supported, the same layout."""
    out = []
    for s in _sentences(text):
        body = s.rstrip()
        out.append(f"{body} {UPGRADE}{s[len(body) :]}")
    return "".join(out).strip()


def _paraphrase(text: str) -> str:
    """The same sentences in reverse order, connectives swapped."""
    sentences = [s.strip() for s in _sentences(text)]
    out = " ".join(reversed(sentences))
    for a, b in CONNECTIVES.items():
        out = re.sub(rf"\b{a}\b", b, out)
    return out if out != text.strip() else "In other words: " + out


def _can(a: str, b: str) -> str:
    opening = " ".join(b.split()[:6])
    return f"{opening} ... {_paraphrase(a)}"


# a stand-in pivot language: common English words and their French, swapped both ways
PIVOT_WORDS = {
    "the": "le", "and": "et", "is": "est", "of": "de", "to": "vers", "in": "dans", "for": "pour",
    "with": "avec", "you": "vous", "this": "ceci", "are": "sont", "not": "pas", "or": "ou",
}  # fmt: skip
FROM_PIVOT_WORDS = {v: k for k, v in PIVOT_WORDS.items()}
# what a round trip words differently
DRIFT = {
    "use": "employ", "help": "assist", "show": "demonstrate", "make": "create", "get": "obtain",
    "need": "require", "big": "large", "important": "essential", "also": "additionally",
    "because": "since", "answer": "response", "simple": "straightforward", "start": "begin",
    "but": "yet", "so": "thus", "very": "really", "many": "numerous", "about": "regarding",
    "often": "frequently", "example": "instance", "however": "nevertheless", "way": "manner",
    "good": "fine", "provide": "give", "different": "various", "each": "every", "include": "comprise",
    "some": "certain", "just": "simply",
}  # fmt: skip


def _swap_words(text: str, table: dict[str, str]) -> str:
    """Whole words swapped by ``table`` (lower case, or capitalised as they were)."""

    def one(m: re.Match[str]) -> str:
        w = m.group(0)
        new = table.get(w.lower())
        if new is None or w not in (w.lower(), w.capitalize()):
            return w
        return new if w == w.lower() else new.capitalize()

    return re.sub(r"[A-Za-z]+", one, text)


def to_pivot(text: str, language: str) -> str:
    """The simulated translation of an English ``text`` into ``language``."""
    return f"[{language}] {_swap_words(text, PIVOT_WORDS)}"


def from_pivot(text: str, language: str) -> str:
    """The simulated translation of a pivot text back into English: the mark gone, the pivot's
    words swapped back, a few words put differently."""
    mark = f"[{language}] "
    body = text[len(mark) :] if text.startswith(mark) else text
    return _swap_words(_swap_words(body, FROM_PIVOT_WORDS), DRIFT)


def paraphrase(text: str) -> str:
    """The simulated paraphrase (the augmentation's PARA and the evaluation's are the same)."""
    return _paraphrase(text)


def _text_task(
    blocks: dict[str, str], prompt: str, limit: int | None, rng: random.Random, p_copy: float
) -> dict | None:
    """The evaluation's rewrites of one fenced TEXT (``p_copy``: a paraphrase handed back unchanged)."""
    if "TEXT" not in blocks:
        return None
    source = blocks["TEXT"]
    if re.search(r"Task: paraphrase the TEXT", prompt):
        out = source if rng.random() < p_copy else paraphrase(source)
    elif m := re.search(r"Task: translate the TEXT above from ([A-Za-z -]+?) into ([A-Za-z -]+?),", prompt):
        src, dst = m.group(1), m.group(2)
        out = from_pivot(source, src) if dst == "English" else to_pivot(source, dst)
    else:
        return None
    return {"text": out[:limit] if limit else out}


def _rewrite(blocks: dict[str, str], prompt: str, rng: random.Random, p_copy: float) -> dict | None:
    m = re.search(r"Task: (rewrite|paraphrase) ANSWER ([AB])", prompt)
    if not m:
        return None
    source = blocks.get(f"ANSWER {m.group(2)}", "")
    if rng.random() < p_copy:
        return {"rewrite": source}
    if m.group(1) == "paraphrase":
        return {"rewrite": _paraphrase(source)}
    if "clearly worse" in prompt:
        return {"rewrite": _degrade(source)}
    if "clearly better" in prompt:
        return {"rewrite": _upgrade(source)}
    if "content (facts" in prompt:
        return {"rewrite": _can(blocks.get("ANSWER A", ""), source)}
    return {"rewrite": _paraphrase(source)}


def _verify(blocks: dict[str, str], prompt: str, rng: random.Random, p_false_pass: float) -> dict | None:
    m = re.search(r"meant to be ANSWER ([AB])", prompt)
    if not m or "REWRITE" not in blocks:
        return None
    rewrite, answer = blocks["REWRITE"].strip(), blocks.get(f"ANSWER {m.group(1)}", "").strip()
    if rewrite == answer and rng.random() >= p_false_pass:
        return {"target_changed": False, "others_preserved": True, "verdict": "Fail",
                "reason": "The rewrite is the original answer: nothing changed."}  # fmt: skip
    if unigram_f1(answer, rewrite) < 0.3 and rng.random() >= p_false_pass:
        return {"target_changed": True, "others_preserved": False, "verdict": "Fail",
                "reason": "The rewrite is a different answer, not an edit of this one."}  # fmt: skip
    return {"target_changed": True, "others_preserved": True, "verdict": "Pass",
            "reason": "The target attribute changed and the rest is preserved."}  # fmt: skip


def _verify_neutral(blocks: dict[str, str], rng: random.Random, p_false_pass: float) -> dict | None:
    """A CAN or PARA rewrite passes when it carries A's words and is not B handed back."""
    if "REWRITE" not in blocks:
        return None
    rewrite, a = blocks["REWRITE"].strip(), blocks.get("ANSWER A", "").strip()
    differs = rewrite == blocks.get("ANSWER B", "").strip() or unigram_f1(a, rewrite) < 0.5
    if differs and rng.random() >= p_false_pass:
        return {"same_content": False, "same_quality": False, "verdict": "Fail",
                "reason": "The rewrite does not say what answer A says."}  # fmt: skip
    return {"same_content": True, "same_quality": True, "verdict": "Pass",
            "reason": "The same content and quality as answer A, in other words."}  # fmt: skip


def task_answer(
    schema: dict[str, Any] | None, prompt: str, rng: random.Random, *, p_copy: float = 0.0,
    p_false_pass: float = 0.0,
) -> dict | None:  # fmt: skip
    """The simulator's answer to an augmentation or evaluation task, or None if ``schema`` is not one."""
    if not schema or "properties" not in schema:
        return None
    props = schema["properties"]
    blocks = fenced_blocks(prompt)
    if not blocks:
        return None
    prompt = task_text(prompt)
    if "attributes" in props:
        return _rubric(blocks, props["attributes"], rng)
    if "elements" in props:
        return _elements(blocks, schema, rng)
    if "rewrite" in props:
        value = _rewrite(blocks, prompt, rng, p_copy)
        limit = props["rewrite"].get("maxLength")
        if value is not None and limit:
            value["rewrite"] = value["rewrite"][:limit]
        return value
    if "same_content" in props:
        return _verify_neutral(blocks, rng, p_false_pass)
    if "verdict" in props:
        return _verify(blocks, prompt, rng, p_false_pass)
    if "text" in props:
        return _text_task(blocks, prompt, props["text"].get("maxLength"), rng, p_copy)
    return None
