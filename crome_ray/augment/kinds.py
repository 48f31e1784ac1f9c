"""The augmentation's pair kinds in one table: the switch that turns each on, the oracle task that
writes it (its prompt and phase), how its pair is built, and its label. Pure.

Every pair is (request, A, B) with label ``chosen`` (A ≻ B) or ``tie``. The kinds, after the
paper's steps (docs/method.md):

- ``original``: the source pair;
- ``causal_degrade``: the chosen answer ≻ itself made worse in one rubric attribute;
- ``causal_upgrade``: the rejected answer made better in one attribute ≻ the rejected answer;
- ``neutral_iqn``: the source's two answers under another, unrelated request: a tie;
- ``neutral_can``: the chosen answer, and the rejected one given the chosen one's content in
  its own style: a tie;
- ``neutral_para``: the chosen answer and a paraphrase of it: a tie;
- ``rrm_prefer`` and ``rrm_tie``: the RRM baseline's non-contextual pairs (an answer to the
  request ≻ an answer to another request; two answers to other requests tie).

The planner (``augment.plan``) asks for the rewrites of the kinds that are on, phase by
phase; the flow (``augment.flow``) builds each kept rewrite's pair with the kind's ``pair``
and verifies it if the kind says so; the manifest's ratio note counts the kinds that are on.
A new kind is one entry here, its switch in ``AugmentTasks`` and, if the oracle writes it,
its prompt in ``augment.prompts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from crome_ray.augment import prompts as P

Side = Literal["A", "B"]
Prompt = Callable[[P.Example, "P.Attribute | None", bool, int], P.OracleTask]
"""(example, the rubric attribute or None, a safety example?, chars) -> the task."""


@dataclass(frozen=True)
class PairKind:
    name: str  # the pairs table's ``kind``
    label: Literal["chosen", "tie"]
    flag: str | None  # the ``AugmentTasks`` switch that turns it on (None: always there)
    task: str | None = None  # the oracle task that writes its rewrite (None: no oracle call)
    phase: int | None = None  # 1: needs nothing before it; 2: needs the example's rubric
    rewrites: Side | None = None  # the answer the task rewrites (A: the chosen one, B: the rejected)
    per_attribute: bool = False  # one rewrite per rubric attribute
    verified: bool = False  # a verifier call judges the rewrite (``is_verified``: when the tasks say so)
    direction: Literal["worse", "better"] | None = None  # what the verifier is told the rewrite did
    carries_a: bool = False  # the rewrite must carry A's content (its checks compare it with A too)
    prompt: Prompt | None = None
    pair: Callable[[P.Example, str], tuple[str, str]] | None = None  # (A, B) from the example and rewrite

    def source(self, ex: P.Example) -> str:
        """The text the rewrite rewrites (the code checks and leakage compare against it)."""
        return ex.chosen if self.rewrites == "A" else ex.rejected


KINDS: tuple[PairKind, ...] = (
    PairKind("original", "chosen", None),
    PairKind(
        "causal_degrade", "chosen", "causal", task="degrade", phase=2, rewrites="A", per_attribute=True,
        verified=True, direction="worse",
        prompt=lambda ex, a, safety, chars: P.degrade(ex, a, safety=safety, chars=chars),
        pair=lambda ex, rewrite: (ex.chosen, rewrite),
    ),
    PairKind(
        "causal_upgrade", "chosen", "causal", task="upgrade", phase=2, rewrites="B", per_attribute=True,
        verified=True, direction="better",
        prompt=lambda ex, a, safety, chars: P.upgrade(ex, a, chars=chars),
        pair=lambda ex, rewrite: (rewrite, ex.rejected),
    ),
    PairKind("neutral_iqn", "tie", "iqn"),
    PairKind(
        "neutral_can", "tie", "can", task="can", phase=1, rewrites="B", carries_a=True, verified=True,
        prompt=lambda ex, a, safety, chars: P.can(ex, chars=chars),
        pair=lambda ex, rewrite: (ex.chosen, rewrite),
    ),
    PairKind(
        "neutral_para", "tie", "para", task="para", phase=1, rewrites="A", verified=True,
        prompt=lambda ex, a, safety, chars: P.para(ex, "A", chars=chars),
        pair=lambda ex, rewrite: (ex.chosen, rewrite),
    ),
    PairKind("rrm_prefer", "chosen", "rrm"),
    PairKind("rrm_tie", "tie", "rrm"),
)  # fmt: skip
KIND_NAMES = tuple(k.name for k in KINDS)
BY_NAME = {k.name: k for k in KINDS}
BY_TASK = {k.task: k for k in KINDS if k.task}  # the rewrite tasks' kinds
REWRITE_TASKS = tuple(BY_TASK)


def is_on(kind: PairKind, tasks: object) -> bool:
    """Whether ``tasks`` (an ``AugmentTasks``) turns the kind on."""
    return kind.flag is None or bool(getattr(tasks, kind.flag))


def is_verified(kind: PairKind, tasks: object) -> bool:
    """Whether the run sends the kind's rewrites to the verifier: ``tasks.verify`` on, and for a
    tie ``tasks.verify_neutrals`` too (resolved: ``AugmentConfig.run_tasks``)."""
    return bool(tasks.verify) and kind.verified and (kind.label == "chosen" or bool(tasks.verify_neutrals))


GATED = tuple(k.name for k in KINDS if k.task)  # the kinds the oracle writes: the quality gate's


def ratio_note(tasks: object) -> str:
    """What the manifest says of the ratio to the source: the most pairs an example can give with
    these tasks, and where the rest went."""
    if tasks.rrm:
        return "RRM mode: the original pair plus up to 2 non-contextual pairs per example"
    attributes = tasks.attributes
    per_kind = {
        k.name: (attributes if k.per_attribute else 1) * is_on(k, tasks) for k in KINDS if k.flag != "rrm"
    }
    parts = " + ".join(f"{n} {name}" for name, n in per_kind.items() if name != "original")
    return (
        f"at most {sum(per_kind.values())} pairs per example with these tasks (original + {parts}); "
        "the paper's ~3.5× is after its verifier and baseline filter; the difference is in rejected "
        "(by stage and check), filtered and quarantine"
    )
