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
from crome_ray.augment.checks import neutral_problem, rewrite_problem
from crome_ray.augment.config import AugmentTasks, LeakageLimits, RewriteChecks
from crome_ray.augment.kinds import BY_NAME, BY_TASK, is_on, is_verified
from crome_ray.augment.leakage import Leakage, leak_reason, leakage
from crome_ray.augment.parse import (
    Rejected,
    Rubric,
    parse_elements,
    parse_rewrite,
    parse_rubric,
    parse_verdict,
)
from crome_ray.augment.plan import PlannedTask, neutral_check, phase1, phase2, phase3, skipped_rewrites
from crome_ray.records import excerpt
from crome_ray.text_similarity import cosine as similarity

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
    """Verifier probes whose right verdict is Fail. For the causal verifier: the chosen answer
    unchanged, and an answer written for another request, each shown as A made worse in
    accuracy. For each neutral kind it verifies: an answer written for another request shown as
    the kind's rewrite, and the rejected answer shown as one (CAN: B unchanged; PARA: B as A's
    paraphrase), where B is not a near copy of A."""
    probes: list[PlannedTask] = []
    if t.verify:
        causal = [("original", ex.chosen)] + ([("unrelated", unrelated)] if unrelated else [])
        probes += [
            PlannedTask(
                f"{ex.id}/control/{name}",
                ex.id,
                1,
                "control",
                P.verify(ex, "A", text, CONTROL_ATTRIBUTE, "worse", chars=t.chars),
                attribute=name,
                source=ex.chosen,
            )
            for name, text in causal
        ]
    for kind in (BY_NAME["neutral_can"], BY_NAME["neutral_para"]):
        if not (is_on(kind, t) and is_verified(kind, t)):
            continue
        other = "unchanged" if kind.task == "can" else "other_answer"
        neutral = ([(other, ex.rejected)] if ex.rejected.strip() != ex.chosen.strip() else []) + (
            [("unrelated", unrelated)] if unrelated else []
        )
        probes += [
            PlannedTask(
                f"{ex.id}/control/{kind.task}/{name}",
                ex.id,
                1,
                "control",
                P.verify_neutral(ex, kind.task, text, chars=t.chars),
                attribute=name,
                source=kind.source(ex),
                probe_of=kind.name,
            )
            for name, text in neutral
        ]
    return probes


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
    embed = _remembered(embed) if embed is not None else None
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
    controls = control_tasks(ex, other.chosen if other else None, t) if control else []
    rubric, neutrals = await _phase1(out, ex, ask, s, controls, embed)
    to_verify = await _phase2(out, ex, ask, s, rubric, neutrals, embed)
    if to_verify and rubric is not None:
        await _phase3(out, ex, ask, s, rubric, to_verify, embed)
    return out


def _remembered(embed: Embed) -> Embed:
    """``embed`` that embeds each text of the example once (the meaning check and the leakage
    cosine both embed A and a PARA rewrite)."""
    seen: dict[str, Sequence[float]] = {}

    async def remembered(texts: list[str]) -> list[Sequence[float]]:
        new = [t for t in dict.fromkeys(texts) if t not in seen]
        if new:
            seen.update(zip(new, await embed(new), strict=True))
        return [seen[t] for t in texts]

    return remembered


def _served(out: Records, ex: P.Example, tasks: list[PlannedTask], answers: dict[str, Answer]):
    """The tasks the oracle served, with their answers; each call counted, each failure quarantined."""
    for task in tasks:
        ans = answers[task.id]
        out.stats[f"calls_{task.kind}"] += 1
        if not _failed(out, ex, task, ans):
            out.stats[f"served_{task.kind}"] += 1
            yield task, ans


Written = tuple[PlannedTask, str, Answer]  # a rewrite task, the rewrite, the oracle's answer


async def _phase1(
    out: Records, ex: P.Example, ask: Ask, s: Settings, controls: list[PlannedTask], embed: Embed | None
) -> tuple[Rubric | None, list[Written]]:
    """The rubric, the neutral rewrites and the control probes' verdicts. Returns the rubric and
    the neutrals to verify (the others are kept or rejected here)."""
    first = phase1(ex, s.tasks)
    if not first and not controls:
        return None, []
    answers = await ask(first + controls)
    for task in controls:
        _control(out, ex, task, answers[task.id])
    rubric, neutrals = None, []
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
        if text is None or not await _says_what_a_says(out, ex, task, text, ans, s, embed):
            continue
        if is_verified(BY_TASK[task.kind], s.tasks):
            neutrals.append((task, text, ans))
        else:
            await _keep(out, ex, task, text, (ans,), s, embed)
    return rubric, neutrals


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
            "verifier": task.probe_of,
            "probe": task.attribute,
            "passed": None if verdict is None else verdict.passed,
            "reason": verdict.reason if verdict else (ans.detail or ans.error),
            "backend": ans.backend,
            "model": ans.model,
        },
    )


async def _phase2(
    out: Records,
    ex: P.Example,
    ask: Ask,
    s: Settings,
    rubric: Rubric | None,
    neutrals: list[Written],
    embed: Embed | None,
) -> list[Written]:
    """The causal elements and the rewrites per attribute (with a rubric), and the neutrals'
    verdicts; returns the causal rewrites to verify."""
    second = phase2(ex, rubric.attributes, s.tasks) if rubric is not None else []
    checks = [neutral_check(ex, task, text, s.tasks) for task, text, _ in neutrals]
    if not second and not checks:
        return []
    answers = await ask(second + checks)
    to_verify: list[Written] = []
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
        if is_verified(BY_TASK[task.kind], s.tasks):
            to_verify.append((task, text, ans))
        else:
            await _keep(out, ex, task, text, (ans,), s, embed)
    await _judged(out, ex, s, checks, answers, neutrals, embed)
    return to_verify


async def _phase3(
    out: Records,
    ex: P.Example,
    ask: Ask,
    s: Settings,
    rubric: Rubric,
    to_verify: list[Written],
    embed: Embed | None,
) -> None:
    """A verdict on each causal rewrite."""
    by_name = {a.name: a for a in rubric.attributes}
    third = [phase3(ex, task, text, by_name[task.attribute], s.tasks) for task, text, _ in to_verify]
    await _judged(out, ex, s, third, await ask(third), to_verify, embed)


async def _judged(
    out: Records,
    ex: P.Example,
    s: Settings,
    checks: list[PlannedTask],
    answers: dict[str, Answer],
    rewrites: list[Written],
    embed: Embed | None,
) -> None:
    """Each rewrite's verdict (``checks[i]`` judges ``rewrites[i]``): a Pass keeps it (leakage
    limits aside)."""
    by_id = {check.id: entry for check, entry in zip(checks, rewrites, strict=True)}
    for check, ans in _served(out, ex, checks, answers):
        task, text, rewrite_ans = by_id[check.id]
        try:
            verdict = parse_verdict(ans.value)
        except Rejected as e:
            out.reject(ex, task, "parse", f"the verdict: {e}", text, ans)
            continue
        out.stats[f"verdict_{'pass' if verdict.passed else 'fail'}_{task.kind}"] += 1
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
    kind = BY_TASK[task.kind]
    problem = rewrite_problem(
        task.source,
        text,
        s.checks,
        P.fences(ex),
        neutral=kind.label == "tie",  # a tie's rewrite is held to the lower similarity bound
        a=ex.chosen if kind.carries_a else None,
        request=ex.question,
        task_text=task.task_text,
    )
    if problem is not None:
        check, reason = problem
        out.stats[f"check_{check}"] += 1
        out.reject(ex, task, "checks", reason, text, ans, check=check)
        return None
    return text


async def _says_what_a_says(
    out: Records, ex: P.Example, task: PlannedTask, text: str, ans: Answer, s: Settings, embed: Embed | None
) -> bool:
    """The neutrals' meaning check (``checks.neutral_problem``): A's content in the rewrite, by
    the embedder's cosine when there is one, by word overlap otherwise."""
    cosine = None
    if embed is not None:
        a, b = await embed([ex.chosen, text])
        cosine = float(similarity(a, b))
    if (problem := neutral_problem(ex.chosen, text, s.checks, cosine)) is None:
        return True
    out.stats["check_meaning"] += 1
    out.reject(ex, task, "checks", problem, text, ans, check="meaning")
    return False


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
