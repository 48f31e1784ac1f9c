"""Which oracle calls an example needs, phase by phase, and what a run will cost before it starts. Pure.

The augmentation asks in three phases, each needing the answers of the one before:

1. ``rubric``, plus the neutral rewrites that need nothing else (CAN, PARA);
2. the causal elements and, per rubric attribute, a degradation of the chosen answer and an
   upgrade of the rejected one; a safety example (its request, or an attribute of its
   rubric, is about safety or harm) gets the safety degradation for every attribute;
3. a verification of each causal rewrite that passed the code-level checks.

The neutral rewrites' verifications (``tasks.verify_neutrals``) need no rubric: they go out
in phase 2 (``neutral_check``).

An answer longer than ``chars`` is not rewritten: the oracle would see it cut off, and the
pair would set a whole answer against a rewrite of a fragment (a length cue, the kind of
cue Crome exists to remove). ``skipped_rewrites`` says which. RRM mode makes no oracle
calls at all (its pairs are non-contextual).

Task ids are stable (``<example id>/<kind>[/<attribute index>]``), so a re-run finds the same
rows, and the oracle's cache keys (a hash of the request) make answered calls free.

``project`` is the dry run's estimate: the calls of every phase, their input tokens
counted on the prompts as they will be sent (by ``count_tokens``, the provider's
tokenizer or an estimate of it), and their output tokens estimated per task kind
(``expected_output_tokens``); with a price, the dollars. Before the rubrics exist, phase 2
and 3 prompts are built on a stand-in rubric of ℓ attributes with typical name and
description lengths, and every rewrite is assumed to pass the checks, so the call count
is an upper bound (retries aside). The tokens are an estimate, not a bound: real
descriptions can be longer than the stand-in's, a rewrite may be up to twice its source,
thinking tokens are not counted. The dollar cap, not the projection, bounds the spend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentTasks
from crome_ray.augment.kinds import BY_TASK, KINDS, REWRITE_TASKS, is_on, is_verified
from crome_ray.oracle.config import ModelPrice

SAFETY = re.compile(
    r"\b(?:safe|safety|unsafe|harm\w*|danger\w*|ethic\w*|toxic\w*|illegal|weapon\w*)", re.IGNORECASE
)
STAND_IN = tuple(
    P.Attribute(name, "How well the answer meets this attribute of a good reply to the request.", 0.2)
    for name in ("accuracy", "completeness", "clarity", "relevance", "helpfulness", "concision", "format",
                 "depth", "structure", "tone")
)  # fmt: skip


@dataclass(frozen=True)
class PlannedTask:
    id: str
    example_id: str
    phase: int
    kind: str  # rubric | elements | verify | control, or a rewrite task of augment.kinds
    task: P.OracleTask
    attribute: str | None = None
    source: str = ""  # the text a rewrite rewrites (the checks compare against it)
    task_text: str = ""  # the attribute a causal rewrite changes, "name description" (no echo of it)
    probe_of: str = "causal"  # a control probe: the verifier it calibrates (causal, or a neutral kind)

    def row(self) -> dict:
        return self.task.row(self.id)


def is_safety_example(ex: P.Example, attributes: Iterable[P.Attribute] = ()) -> bool:
    """Whether the request, or an attribute of its rubric, is about safety or harm."""
    return bool(SAFETY.search(ex.question)) or any(
        SAFETY.search(a.name) or SAFETY.search(a.description) for a in attributes
    )


def skipped_rewrites(ex: P.Example, t: AugmentTasks) -> dict[str, str]:
    """The answers too long to rewrite whole (``A``/``B`` → the reason)."""
    return {
        side: f"answer {side} has {len(text):,} characters, more than chars={t.chars:,}: not rewritten"
        for side, text in (("A", ex.chosen), ("B", ex.rejected))
        if len(text) > t.chars
    }


def _planned(ex: P.Example, phase: int, task: P.OracleTask, suffix: str = "", **kw) -> PlannedTask:
    return PlannedTask(f"{ex.id}/{task.kind}{suffix}", ex.id, phase, task.kind, task, **kw)


def _rewrites(
    ex: P.Example,
    t: AugmentTasks,
    phase: int,
    attribute: P.Attribute | None,
    index: int | None,
    safety: bool,
    skip: dict[str, str],
) -> list[PlannedTask]:
    """The rewrite tasks of ``phase`` that ``t`` turns on, in the kinds table's order (per attribute
    for the causal kinds), for the answers short enough to rewrite whole."""
    out = []
    for kind in KINDS:
        if kind.phase != phase or not is_on(kind, t) or kind.per_attribute != (attribute is not None):
            continue
        if kind.rewrites in skip:
            continue
        assert kind.prompt is not None
        task = kind.prompt(ex, attribute, safety, t.chars)
        suffix = "" if index is None else f"/{index}"
        out.append(
            _planned(
                ex,
                phase,
                task,
                suffix,
                attribute=attribute.name if attribute else None,
                source=kind.source(ex),
                task_text=f"{attribute.name} {attribute.description}" if attribute else "",
            )
        )
    return out  # fmt: skip


def phase1(ex: P.Example, t: AugmentTasks) -> list[PlannedTask]:
    if t.rrm:
        return []
    out = []
    if t.causal or t.elements:
        out.append(_planned(ex, 1, P.rubric(ex, attributes=t.attributes, chars=t.chars)))
    return out + _rewrites(ex, t, 1, None, None, False, skipped_rewrites(ex, t))


def phase2(ex: P.Example, attributes: Iterable[P.Attribute], t: AugmentTasks) -> list[PlannedTask]:
    if t.rrm:
        return []
    attributes = list(attributes)
    skip, safety = skipped_rewrites(ex, t), is_safety_example(ex, attributes)
    out = []
    if t.elements:
        out.append(_planned(ex, 2, P.elements(ex, attributes, chars=t.chars)))
    for i, a in enumerate(attributes):
        out += _rewrites(ex, t, 2, a, i, safety, skip)
    return out


def phase3(
    ex: P.Example, rewrite: PlannedTask, text: str, attribute: P.Attribute, t: AugmentTasks
) -> PlannedTask:
    """The verification of one rewrite (``rewrite`` is its task, ``text`` what came back)."""
    kind = BY_TASK[rewrite.kind]
    assert kind.rewrites is not None and kind.direction is not None, f"{kind.name} is not verified"
    task = P.verify(ex, kind.rewrites, text, attribute, kind.direction, chars=t.chars)
    return PlannedTask(f"{rewrite.id}/verify", ex.id, 3, "verify", task, rewrite.attribute, rewrite.source)


def neutral_check(ex: P.Example, rewrite: PlannedTask, text: str, t: AugmentTasks) -> PlannedTask:
    """The verification of a CAN or PARA rewrite: the same content and quality as A? (phase 2:
    it needs no rubric, so it goes out with the causal rewrites)."""
    task = P.verify_neutral(ex, rewrite.kind, text, chars=t.chars)
    return PlannedTask(f"{rewrite.id}/verify", ex.id, 2, "verify", task, rewrite.attribute, rewrite.source)


def verification(
    ex: P.Example, rewrite: PlannedTask, text: str, attribute: P.Attribute | None, t: AugmentTasks
) -> PlannedTask:
    """A rewrite's verification: the causal one on its attribute, or the neutral one."""
    if BY_TASK[rewrite.kind].label == "tie":
        return neutral_check(ex, rewrite, text, t)
    assert attribute is not None
    return phase3(ex, rewrite, text, attribute, t)


def expected_output_tokens(planned: PlannedTask, count_tokens: Callable[[str], int]) -> int:
    """What a task's answer is expected to cost in output tokens: a rewrite about as long as its
    source, a rubric ~40 tokens an attribute, elements ~35 tokens each (two per attribute and
    answer), a verdict ~45 tokens; never more than the task's own output budget."""
    kind = planned.kind
    if kind in REWRITE_TASKS:
        guess = count_tokens(planned.source) + 8
    elif kind == "rubric":
        n = planned.task.schema["properties"]["attributes"]["maxItems"]
        guess = 40 * n + 8
    elif kind == "elements":
        n = len(planned.task.schema["properties"]["elements"]["items"]["properties"]["attribute"]["enum"])
        guess = 35 * 2 * n + 8
    else:
        guess = 45
    return min(guess, planned.task.max_output_tokens)


@dataclass
class Projection:
    examples: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # per task kind
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float | None = None

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "calls": dict(sorted(self.calls.items())),
            "total_calls": self.total_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usd": None if self.usd is None else round(self.usd, 6),
        }


def project(
    examples: Iterable[P.Example],
    t: AugmentTasks,
    count_tokens: Callable[[str], int],
    price: ModelPrice | None = None,
    oracle_examples: int | None = None,
) -> Projection:
    """The dry run: every call the run would make if every rewrite passed its checks (none for
    the examples past ``oracle_examples``)."""
    out = Projection()
    stand_in = list(STAND_IN[: t.attributes])  # AugmentTasks allows at most len(STAND_IN)
    by_name = {a.name: a for a in stand_in}
    for ex in examples:
        out.examples += 1
        if oracle_examples is not None and out.examples > oracle_examples:
            continue
        planned = phase1(ex, t) + phase2(ex, stand_in, t)
        rewrites = [p for p in planned if p.kind in BY_TASK and is_verified(BY_TASK[p.kind], t)]
        planned += [verification(ex, p, p.source, by_name.get(p.attribute or ""), t) for p in rewrites]
        for p in planned:
            out.calls[p.kind] = out.calls.get(p.kind, 0) + 1
            out.input_tokens += count_tokens(p.task.system) + count_tokens(p.task.prompt)
            out.output_tokens += expected_output_tokens(p, count_tokens)
    if price is not None:
        out.usd = (out.input_tokens * price.input_per_m + out.output_tokens * price.output_per_m) / 1e6
    return out
