"""The oracle tasks of Crome's augmentation, as requests: rubric, counterfactual rewrite, verification. Pure.

Each builder returns an ``OracleTask`` (system text, prompt, JSON schema, output budget)
for one UltraFeedback example; the oracle layer sends it to whichever backend. The
schemas carry their own ``maxLength``/``maxItems`` where the task knows a bound (a
rubric has 3 to 5 attributes; a rewrite is at most about twice its source), so local
engines are held to them (``oracle.schema_bounds`` keeps tighter bounds).

Crome (METHOD.md): a rubric names the causal attributes of a good answer with weights
that sum to 1; a counterfactual rewrites an answer to be worse on one attribute while
strictly preserving everything else; a verification checks that a rewrite changed the
target attribute and only it. The rewrite output here is JSON (``{"rewrite": ...}``),
not the paper's free-text "New Response:" block, so every backend can be held to a
schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OracleTask:
    kind: str  # rubric | counterfactual | verification
    system: str
    prompt: str
    schema: dict[str, Any]
    max_output_tokens: int

    def row(self, id_: str) -> dict[str, Any]:
        """As a row of the oracle job's input table."""
        return {
            "id": id_,
            "system": self.system,
            "prompt": self.prompt,
            "schema": json.dumps(self.schema),
            "max_output_tokens": self.max_output_tokens,
        }


RUBRIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "attributes": {
            "type": "array",
            "minItems": 3,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "description": {"type": "string", "maxLength": 200},
                    "weight": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["name", "description", "weight"],
            },
        }
    },
    "required": ["attributes"],
}

VERIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "target_changed": {"type": "boolean"},
        "others_preserved": {"type": "boolean"},
        "verdict": {"type": "string", "enum": ["Pass", "Fail"]},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["target_changed", "others_preserved", "verdict", "reason"],
}


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + " [...]"


def rubric(question: str, *, chars: int = 1500) -> OracleTask:
    return OracleTask(
        kind="rubric",
        system="You write grading rubrics for answers to user requests. Answer with JSON only.",
        prompt=(
            "Name the 3 to 5 most important attributes that make an answer to the request below "
            "good. They must not overlap, and they should depend on the request itself rather than "
            "on style. For each, give a short name, a one-sentence description and an importance "
            "weight; the weights sum to 1.\n\nRequest:\n" + clip(question, chars)
        ),
        schema=RUBRIC_SCHEMA,
        max_output_tokens=320,
    )


def counterfactual(
    question: str, answer: str, attribute: str, *, chars: int = 1500, max_output_tokens: int = 512
) -> OracleTask:
    source = clip(answer, chars)
    return OracleTask(
        kind="counterfactual",
        system="You rewrite answers for a controlled experiment. Answer with JSON only.",
        prompt=(
            f"Rewrite the answer below so that it is clearly worse in one attribute only: "
            f"{attribute}. Keep everything else as it is: length, tone, format and every other "
            "attribute. Do not comment on the change.\n\n"
            f"Request:\n{clip(question, chars)}\n\nAnswer:\n{source}"
        ),
        schema={
            "type": "object",
            "properties": {"rewrite": {"type": "string", "maxLength": max(2 * len(source), 200)}},
            "required": ["rewrite"],
        },
        max_output_tokens=max_output_tokens,
    )


def verification(
    question: str, original: str, rewrite: str, attribute: str, *, chars: int = 1200
) -> OracleTask:
    return OracleTask(
        kind="verification",
        system="You check rewrites made for a controlled experiment. Answer with JSON only.",
        prompt=(
            f"A rewrite of an answer was meant to be clearly worse in one attribute, {attribute}, "
            "and the same in everything else. Did the rewrite change that attribute, and only it? "
            "Give Pass only if both hold.\n\n"
            f"Request:\n{clip(question, chars)}\n\nOriginal answer:\n{clip(original, chars)}\n\n"
            f"Rewrite:\n{clip(rewrite, chars)}"
        ),
        schema=VERIFY_SCHEMA,
        max_output_tokens=160,
    )
