"""What one example goes through: the three phases of oracle calls, the checks between them,
and the rows that come out. Pure: the oracle is the injected ``ask``.

``augment_example`` turns one source pair into records, each ``(table, row)``:

- ``pairs``: rows of ``records.AUGMENTED_PAIR_SCHEMA`` (the original pair always; the IQN or RRM
  pairs the stage chose; every rewrite that passed the code checks, the verifier and the
  leakage limits);
- ``rejected``: a rewrite that was written but not used, with the stage that refused it
  (``checks``, ``verify``, ``leakage``, ``parse``) and why (``records.REJECTED_SCHEMA``);
- ``quarantine``: a task the oracle could not serve (its error kind: out of budget, quota,
  invalid output, ...) or whose answer was unusable (a rubric that cannot be parsed): the
  calls that depended on it were not made;
- ``controls``: the verifier's verdict on a control probe (``records.CONTROL_SCHEMA``);
- ``stats``: one row of counters per example (calls, elements, skipped answers).

``ask`` takes planned tasks and returns an ``Answer`` per task id; one call of ``ask`` is one
phase, so all of a phase's calls of an example go out at once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from crome_ray.augment import pairs as Pairs
from crome_ray.augment import prompts as P
from crome_ray.augment.checks import rewrite_problem
from crome_ray.augment.config import AugmentTasks, LeakageLimits, RewriteChecks
from crome_ray.augment.kinds import BY_TASK
from crome_ray.augment.leakage import Leakage, leak_reason, leakage
from crome_ray.augment.parse import (
    Rejected,
    Rubric,
    parse_elements,
    parse_rewrite,
    parse_rubric,
    parse_verdict,
)
from crome_ray.augment.plan import PlannedTask, phase1, phase2, phase3, skipped_rewrites
from crome_ray.records import excerpt

SOURCE = "augment"
CONTROL_ATTRIBUTE = P.Attribute("accuracy", "The answer is factually and logically correct.", 1.0)


@dataclass(frozen=True)
class Answer:
    """One task's outcome, as the stage got it from the oracle (or its fallback)."""

    value: Any = None  # the parsed JSON; None on error
    error: str | None = None  # an ErrorKind
    detail: str | None = None
    backend: str | None = None
    model: str | None = None
    cost_usd: float = 0.0
    key: str | None = None
    cached: bool = False


Ask = Callable[[list[PlannedTask]], Awaitable[dict[str, Answer]]]
Embed = Callable[[list[str]], Awaitable[list[Sequence[float]]]]


@dataclass(frozen=True)
class Other:
    """The other request IQN and RRM use, and where it came from."""

    question: str
    chosen: str
    similarity: float
    method: str
    second: str | None = None  # RRM's third answer: the next least similar request's chosen answer


@dataclass(frozen=True)
class Settings:
    tasks: AugmentTasks
    checks: RewriteChecks = field(default_factory=RewriteChecks)
    limits: LeakageLimits = field(default_factory=LeakageLimits)


@dataclass
class Records:
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))

    def quarantine(self, ex: P.Example, task: PlannedTask, reason: str, detail: str, raw: Any) -> None:
        self.add(
            "quarantine",
            {
                "source": SOURCE,
                "source_id": ex.id,
                "location": task.id,
                "stage": f"augment.{task.kind}",
                "reason": reason,
                "detail": detail,
                "excerpt": excerpt(raw),
            },
        )

    def reject(
        self,
        ex: P.Example,
        task: PlannedTask,
        stage: str,
        reason: str,
        rewrite: str | None,
        answer: Answer,
        check: str | None = None,
        leak: Leakage | None = None,
    ) -> None:
        self.stats[f"rejected_{stage}"] += 1
        self.add(
            "rejected",
            {
                "source_id": ex.id,
                "task_id": task.id,
                "kind": task.kind,
                "attribute": task.attribute,
                "stage": stage,
                "check": check,
                "reason": reason,
                "rewrite": rewrite,
                "leakage": json.dumps(asdict(leak)) if leak else None,
                "backend": answer.backend,
                "model": answer.model,
            },
        )


def _origin(*answers: Answer) -> Pairs.Origin:
    first = answers[0]
    return Pairs.Origin(
        backend=first.backend,
        model=first.model,
        cost_usd=round(sum(a.cost_usd for a in answers), 9),
        request_keys=tuple(a.key for a in answers if a.key),
    )


def _failed(out: Records, ex: P.Example, task: PlannedTask, ans: Answer) -> bool:
    """Quarantine a task the oracle could not serve; True when it failed."""
    if ans.error is None:
        return False
    out.stats[f"oracle_{ans.error}"] += 1
    where = f"{ans.backend} {ans.model}: " if ans.backend else ""
    out.quarantine(ex, task, ans.error, f"{where}{ans.detail or ans.error}", task.task.prompt[-600:])
    return True


async def _leak(source: str, rewrite: str, embed: Embed | None) -> Leakage:
    if embed is None:
        return leakage(source, rewrite)
    a, b = await embed([source, rewrite])
    return leakage(source, rewrite, a, b)


def control_tasks(ex: P.Example, unrelated: str | None, t: AugmentTasks) -> list[PlannedTask]:
    """Two verifier probes whose right verdict is Fail: the chosen answer unchanged, and an answer
    written for another request, each shown as A made worse in accuracy."""
    probes = [("original", ex.chosen)] + ([("unrelated", unrelated)] if unrelated else [])
    return [
        PlannedTask(
            f"{ex.id}/control/{name}",
            ex.id,
            1,
            "control",
            P.verify(ex, "A", text, CONTROL_ATTRIBUTE, "worse", chars=t.chars),
            attribute=name,
            source=ex.chosen,
        )
        for name, text in probes
    ]


async def augment_example(
    ex: P.Example,
    ask: Ask,
    s: Settings,
    *,
    other: Other | None = None,
    control: bool = False,
    embed: Embed | None = None,
    original: dict[str, Any] | None = None,
) -> Records:
    """``original``: the source pair's own row (its source, subset and metadata kept); unset: built
    from ``ex``."""
    t, out = s.tasks, Records()
    out.add("pairs", original or Pairs.original(ex).to_row())
    if t.rrm:
        if other is not None and other.second is not None:
            answers = (P.Example("", other.question, other.chosen, ""), P.Example("", "", other.second, ""))
            for p in Pairs.rrm(ex, *answers, other.method, other.similarity):
                out.add("pairs", p.to_row())
        return out
    if t.iqn and other is not None:
        out.add("pairs", Pairs.neutral_iqn(ex, other.question, other.method, other.similarity).to_row())
    out.stats["skipped_long_answers"] += len(skipped_rewrites(ex, t))
    controls = control_tasks(ex, other.chosen if other else None, t) if control and t.verify else []
    rubric = await _phase1(out, ex, ask, s, controls, embed)
    if rubric is None:
        return out
    to_verify = await _phase2(out, ex, ask, s, rubric, embed)
    if to_verify:
        await _phase3(out, ex, ask, s, rubric, to_verify, embed)
    return out


def _served(out: Records, ex: P.Example, tasks: list[PlannedTask], answers: dict[str, Answer]):
    """The tasks the oracle served, with their answers; each call counted, each failure quarantined."""
    for task in tasks:
        ans = answers[task.id]
        out.stats[f"calls_{task.kind}"] += 1
        if not _failed(out, ex, task, ans):
            yield task, ans


async def _phase1(
    out: Records, ex: P.Example, ask: Ask, s: Settings, controls: list[PlannedTask], embed: Embed | None
) -> Rubric | None:
    """The rubric, the neutral rewrites (kept or rejected here) and the control probes' verdicts."""
    first = phase1(ex, s.tasks)
    if not first and not controls:
        return None
    answers = await ask(first + controls)
    for task in controls:
        _control(out, ex, task, answers[task.id])
    rubric = None
    for task, ans in _served(out, ex, first, answers):
        if task.kind == "rubric":
            try:
                rubric = parse_rubric(ans.value, s.tasks.attributes)
            except Rejected as e:
                out.stats["rubric_rejected"] += 1
                out.quarantine(ex, task, "rubric_rejected", str(e), ans.value)
                continue
            if rubric.note:
                out.stats["rubric_rescaled"] += 1
            continue
        text = _rewrite_or_reject(out, ex, task, ans, s)
        if text is not None:  # phase 1's rewrites are the neutrals: no attribute to verify them on
            await _keep(out, ex, task, text, (ans,), s, embed)
    return rubric


def _control(out: Records, ex: P.Example, task: PlannedTask, ans: Answer) -> None:
    verdict = None
    if ans.error is None:
        try:
            verdict = parse_verdict(ans.value)
        except Rejected as e:
            ans = Answer(None, "invalid_answer", str(e), ans.backend, ans.model)
    out.add(
        "controls",
        {
            "source_id": ex.id,
            "probe": task.attribute,
            "passed": None if verdict is None else verdict.passed,
            "reason": verdict.reason if verdict else (ans.detail or ans.error),
            "backend": ans.backend,
            "model": ans.model,
        },
    )


async def _phase2(
    out: Records, ex: P.Example, ask: Ask, s: Settings, rubric: Rubric, embed: Embed | None
) -> list[tuple[PlannedTask, str, Answer]]:
    """The causal elements and the rewrites per attribute; returns the rewrites to verify."""
    second = phase2(ex, rubric.attributes, s.tasks)
    if not second:
        return []
    answers = await ask(second)
    to_verify: list[tuple[PlannedTask, str, Answer]] = []
    for task, ans in _served(out, ex, second, answers):
        if task.kind == "elements":
            try:
                kept, unknown = parse_elements(ans.value, rubric)
            except Rejected as e:
                out.quarantine(ex, task, "elements_rejected", str(e), ans.value)
                continue
            out.stats["elements"] += len(kept)
            out.stats["elements_unknown_attribute"] += unknown
            continue
        text = _rewrite_or_reject(out, ex, task, ans, s)
        if text is None:
            continue
        if s.tasks.verify and BY_TASK[task.kind].verified:
            to_verify.append((task, text, ans))
        else:
            await _keep(out, ex, task, text, (ans,), s, embed)
    return to_verify


async def _phase3(
    out: Records,
    ex: P.Example,
    ask: Ask,
    s: Settings,
    rubric: Rubric,
    to_verify: list[tuple[PlannedTask, str, Answer]],
    embed: Embed | None,
) -> None:
    """A verdict on each rewrite; a Pass keeps it (leakage limits aside)."""
    by_name = {a.name: a for a in rubric.attributes}
    third = [phase3(ex, task, text, by_name[task.attribute], s.tasks) for task, text, _ in to_verify]
    answers = await ask(third)
    rewrites = {check.id: entry for check, entry in zip(third, to_verify, strict=True)}
    for check, ans in _served(out, ex, third, answers):
        task, text, rewrite_ans = rewrites[check.id]
        try:
            verdict = parse_verdict(ans.value)
        except Rejected as e:
            out.reject(ex, task, "parse", f"the verdict: {e}", text, ans)
            continue
        if not verdict.passed:
            out.reject(ex, task, "verify", verdict.reason, text, ans)
            continue
        await _keep(out, ex, task, text, (rewrite_ans, ans), s, embed)


def _rewrite_or_reject(
    out: Records, ex: P.Example, task: PlannedTask, ans: Answer, s: Settings
) -> str | None:
    try:
        text = parse_rewrite(ans.value)
    except Rejected as e:
        out.reject(ex, task, "parse", str(e), None, ans)
        return None
    neutral = BY_TASK[task.kind].label == "tie"  # a tie's rewrite is held to the lower similarity bound
    problem = rewrite_problem(task.source, text, s.checks, P.fences(ex), neutral=neutral)
    if problem is not None:
        check, reason = problem
        out.stats[f"check_{check}"] += 1
        out.reject(ex, task, "checks", reason, text, ans, check=check)
        return None
    return text


async def _keep(
    out: Records,
    ex: P.Example,
    task: PlannedTask,
    text: str,
    answers: tuple[Answer, ...],
    s: Settings,
    embed: Embed | None,
) -> None:
    """A rewrite that passed everything before the leakage limits: its pair, unless it leaks."""
    leak = await _leak(task.source, text, embed)
    if reason := leak_reason(leak, s.limits):
        out.reject(ex, task, "leakage", reason, text, answers[-1], leak=leak)
        return
    pair = Pairs.rewritten(BY_TASK[task.kind], ex, text, _origin(*answers), leak, task.attribute)
    out.add("pairs", pair.to_row())
