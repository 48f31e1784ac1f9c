"""The table of pair kinds: every kind is switched by a real task flag, every rewrite kind can be
asked for and placed, and what the manifest says of the most pairs an example gives adds up."""

import pytest

from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentTasks
from crome_ray.augment.kinds import BY_TASK, KIND_NAMES, KINDS, is_on, ratio_note

EX = P.Example("ex1", "Why is the sky blue?", "Rayleigh scattering.", "The ocean.")
ACC = P.Attribute("accuracy", "Correct.", 1.0)


def test_every_kind_is_switched_by_a_flag_of_the_tasks_or_always_there():
    flags = {name for name, f in AugmentTasks.model_fields.items() if f.annotation is bool}
    assert {k.flag for k in KINDS} - {None} <= flags
    assert len(set(KIND_NAMES)) == len(KINDS)
    assert [k.name for k in KINDS if k.flag is None] == ["original"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k.task], ids=lambda k: k.name)
def test_each_rewrite_kind_asks_its_own_task_about_the_answer_it_rewrites(kind):
    attribute = ACC if kind.per_attribute else None
    task = kind.prompt(EX, attribute, False, 4000)
    assert task.kind == kind.task and BY_TASK[kind.task] is kind
    which = "A" if kind.rewrites == "A" else "B"
    assert f"ANSWER {which}" in task.prompt.rsplit("Task:", 1)[1]  # the task names the answer it rewrites
    assert kind.source(EX) == (EX.chosen if which == "A" else EX.rejected)
    a, b = kind.pair(EX, "REWRITE")
    assert "REWRITE" in (a, b) and {a, b} - {"REWRITE"} <= {EX.chosen, EX.rejected}
    # a preference puts the better text first: a degradation second, an upgrade first
    if kind.label == "chosen":
        assert (a == "REWRITE") == (kind.direction == "better")
    assert kind.verified  # every rewrite can go to the verifier (ties: with tasks.verify_neutrals)


def test_the_ratio_note_counts_the_kinds_that_are_on():
    # original 1 + degrade 5 + upgrade 5 + IQN 1 + CAN 1 + PARA 1
    assert ratio_note(AugmentTasks()).startswith("at most 14 pairs per example")
    assert ratio_note(AugmentTasks(causal=False, can=False)).startswith("at most 3 pairs per example")
    assert ratio_note(AugmentTasks(attributes=3, iqn=False)).startswith("at most 9 pairs")
    assert ratio_note(AugmentTasks(rrm=True)).startswith("RRM mode")
    assert not is_on(KINDS[1], AugmentTasks(causal=False)) and is_on(KINDS[0], AugmentTasks(causal=False))
