"""One example through the three phases (augment.flow), with the simulator's task answers as the
oracle: which pairs come out, which rewrites are refused and why, what the controls record,
and what a failed call leaves behind."""

import asyncio
import json
import random

import pytest

from crome_ray.augment.config import AugmentTasks, LeakageLimits
from crome_ray.augment.flow import Answer, Other, Settings, augment_example
from crome_ray.oracle.simulated_tasks import task_answer
from crome_ray.records import AUGMENTED_PAIR_SCHEMA, QUARANTINE_SCHEMA
from tests.augment_examples import mid_sized_example


@pytest.fixture(scope="module")
def example(samples):
    return mid_sized_example(samples, "ex1")


OTHER = Other("How many moons does Mars have?", "Mars has two moons, Phobos and Deimos.", 0.03, "test")


class Oracle:
    """``ask`` backed by the simulator's task answers; ``override(task) -> Answer | None`` changes some."""

    def __init__(self, seed=0, override=None, **sim):
        self.rng, self.override, self.sim = random.Random(seed), override, sim
        self.phases: list[list[str]] = []

    async def __call__(self, tasks):
        self.phases.append([t.id for t in tasks])
        out = {}
        for t in tasks:
            forced = self.override(t) if self.override else None
            if forced is not None:
                out[t.id] = forced
                continue
            value = task_answer(t.task.schema, t.task.prompt, self.rng, **self.sim)
            assert value is not None, t.kind
            out[t.id] = Answer(value, backend="gemini", model="sim", cost_usd=0.001, key=f"k-{t.id}")
        return out


def run(example, oracle, tasks=None, **kw):
    settings = kw.pop("settings", Settings(tasks or AugmentTasks()))
    return asyncio.run(augment_example(example, oracle, settings, **kw))


def table(records, name):
    return [r for t, r in records.rows if t == name]


def test_a_cooperative_oracle_gives_every_kind_of_pair_in_three_phases(example):
    oracle = Oracle()
    out = run(example, oracle, other=OTHER)
    kinds = sorted(r["kind"] for r in table(out, "pairs"))
    assert kinds == sorted(
        ["original", "neutral_iqn", "neutral_can", "neutral_para"]
        + ["causal_degrade"] * 5
        + ["causal_upgrade"] * 5
    )
    assert [len(p) for p in oracle.phases] == [3, 11, 10]  # rubric+can+para; elements+5+5; 10 verdicts
    assert not table(out, "rejected") and not table(out, "quarantine")
    for row in table(out, "pairs"):  # every row fits the training table
        assert set(row) == set(AUGMENTED_PAIR_SCHEMA.names)
    degrade = next(r for r in table(out, "pairs") if r["kind"] == "causal_degrade")
    assert degrade["chosen"] == example.chosen and degrade["rejected"] != example.chosen
    assert degrade["attribute"] and degrade["label"] == "chosen"
    # the pair pays for its rewrite and its verdict, and names both cache keys
    assert degrade["cost_usd"] == pytest.approx(0.002) and len(degrade["request_keys"]) == 2
    assert json.loads(degrade["leakage"])["lexical_overlap"] > 0.5
    iqn = next(r for r in table(out, "pairs") if r["kind"] == "neutral_iqn")
    assert iqn["prompt"] == OTHER.question and iqn["label"] == "tie" and iqn["iqn_similarity"] == 0.03
    assert out.stats["elements"] > 0


def test_a_lazy_oracle_that_copies_its_source_is_stopped_by_the_code_checks_before_any_verdict(example):
    oracle = Oracle(p_copy=1.0)
    out = run(example, oracle)
    rejected = table(out, "rejected")
    assert len(rejected) == 12  # can, para, 5 degrade, 5 upgrade
    assert {r["check"] for r in rejected} == {"near_copy"} and {r["stage"] for r in rejected} == {"checks"}
    assert [r["kind"] for r in table(out, "pairs")] == ["original"]
    assert len(oracle.phases) == 2  # nothing passed the checks: no verification phase
    assert out.stats["check_near_copy"] == 12


def test_a_failed_verdict_rejects_the_rewrite_with_the_verifiers_reason(example):
    def fail_upgrades(t):
        if t.kind == "verify" and "/upgrade/" in t.id:
            return Answer({"target_changed": False, "others_preserved": True, "verdict": "Fail",
                           "reason": "nothing got better"}, backend="gemini", model="sim")  # fmt: skip
        return None

    out = run(example, Oracle(override=fail_upgrades))
    rejected = table(out, "rejected")
    assert len(rejected) == 5 and {r["stage"] for r in rejected} == {"verify"}
    assert {r["reason"] for r in rejected} == {"nothing got better"} and {r["kind"] for r in rejected} == {
        "upgrade"
    }
    assert sum(r["kind"] == "causal_upgrade" for r in table(out, "pairs")) == 0
    assert sum(r["kind"] == "causal_degrade" for r in table(out, "pairs")) == 5


def test_out_of_budget_calls_go_to_quarantine_and_their_dependents_are_never_asked(example):
    def broke(t):
        if t.kind == "rubric":
            return Answer(error="budget_exhausted", detail="the call could cross the dollar cap",
                          backend="gemini", model="sim")  # fmt: skip
        return None

    oracle = Oracle(override=broke)
    out = run(example, oracle)
    q = table(out, "quarantine")
    assert [r["reason"] for r in q] == ["budget_exhausted"] and q[0]["location"] == "ex1/rubric"
    assert set(q[0]) == set(QUARANTINE_SCHEMA.names)
    assert len(oracle.phases) == 1  # no rubric, no causal phase
    assert sorted(r["kind"] for r in table(out, "pairs")) == ["neutral_can", "neutral_para", "original"]


def test_an_unusable_rubric_is_quarantined_with_the_parsers_reason(example):
    def zero_weights(t):
        if t.kind == "rubric":
            items = [{"name": f"a{i}", "description": "d", "weight": 0} for i in range(5)]
            return Answer({"attributes": items}, backend="gemini", model="sim")
        return None

    out = run(example, Oracle(override=zero_weights))
    q = table(out, "quarantine")
    assert [r["reason"] for r in q] == ["rubric_rejected"] and "weight" in q[0]["detail"]


def test_control_probes_record_the_verifiers_verdicts_on_answers_it_must_fail(example):
    honest = run(example, Oracle(), other=OTHER, control=True)
    assert {(r["probe"], r["passed"]) for r in table(honest, "controls")} == {
        ("original", False),
        ("unrelated", False),
    }
    lazy = run(example, Oracle(p_false_pass=1.0), other=OTHER, control=True)
    assert {(r["probe"], r["passed"]) for r in table(lazy, "controls")} == {
        ("original", True),
        ("unrelated", True),
    }
    without = run(example, Oracle(), other=OTHER)
    assert table(without, "controls") == []


def test_leakage_limits_drop_rewrites_that_change_the_length_too_much(example):
    def long_para(t):
        if t.kind == "para":
            # A and as much again in other words (A twice over is a loop: the repetition check's)
            more = " ".join(w[::-1] for w in t.source.split())
            return Answer({"rewrite": t.source + " " + more}, backend="g", model="m")
        return None

    s = Settings(
        AugmentTasks(causal=False, elements=False, can=False), limits=LeakageLimits(max_length_change=0.5)
    )
    out = run(example, Oracle(override=long_para), settings=s)
    rejected = table(out, "rejected")
    assert [(r["stage"], r["kind"]) for r in rejected] == [("leakage", "para")]
    assert (
        "length ratio" in rejected[0]["reason"] and json.loads(rejected[0]["leakage"])["length_ratio"] > 1.9
    )


def test_rrm_mode_builds_non_contextual_pairs_without_asking_the_oracle(example):
    oracle = Oracle()
    other = Other(OTHER.question, OTHER.chosen, 0.03, "test", second="An answer to a third request.")
    out = run(example, oracle, tasks=AugmentTasks(rrm=True), other=other)
    assert oracle.phases == []
    pairs = table(out, "pairs")
    assert [r["kind"] for r in pairs] == ["original", "rrm_prefer", "rrm_tie"]
    assert pairs[1]["chosen"] == example.chosen and pairs[1]["rejected"] == OTHER.chosen
    assert pairs[2]["label"] == "tie" and pairs[2]["prompt"] == example.question


def test_an_example_past_oracle_examples_gets_its_original_pair_and_iqn_tie_without_a_call(example):
    from crome_ray.augment.config import without_oracle

    oracle = Oracle()
    out = run(example, oracle, tasks=without_oracle(AugmentTasks()), other=OTHER)
    assert oracle.phases == []
    pairs = table(out, "pairs")
    assert [r["kind"] for r in pairs] == ["original", "neutral_iqn"]
    assert pairs[1]["label"] == "tie" and pairs[1]["prompt"] == OTHER.question


NEUTRALS_VERIFIED = AugmentTasks(verify_neutrals=True)


def test_with_verify_neutrals_can_and_para_are_judged_in_phase_two_and_pay_for_their_verdict(example):
    oracle = Oracle()
    out = run(example, oracle, tasks=NEUTRALS_VERIFIED, other=OTHER)
    assert [len(p) for p in oracle.phases] == [3, 13, 10]  # the two neutral verdicts ride on phase 2
    assert {"ex1/can/verify", "ex1/para/verify"} <= set(oracle.phases[1])
    for kind in ("neutral_can", "neutral_para"):
        (row,) = [r for r in table(out, "pairs") if r["kind"] == kind]
        assert row["cost_usd"] == pytest.approx(0.002) and len(row["request_keys"]) == 2
    assert out.stats["verdict_pass_can"] == out.stats["verdict_pass_para"] == 1


def test_a_neutral_the_verifier_fails_is_rejected_and_never_becomes_a_tie(example):
    def fail_para(t):
        if t.id == "ex1/para/verify":
            return Answer({"same_content": True, "same_quality": False, "verdict": "Pass",
                           "reason": "B is the weaker answer"}, backend="gemini", model="sim")  # fmt: skip
        return None

    out = run(example, Oracle(override=fail_para), tasks=NEUTRALS_VERIFIED)
    (rejected,) = table(out, "rejected")
    assert (rejected["kind"], rejected["stage"]) == ("para", "verify")
    assert "a Pass that says the quality differs: counted as Fail" in rejected["reason"]
    assert "neutral_para" not in {r["kind"] for r in table(out, "pairs")}
    assert out.stats["verdict_fail_para"] == 1


def test_neutrals_are_still_judged_when_the_rubric_is_lost(example):
    def broke(t):
        if t.kind == "rubric":
            return Answer(error="quota", detail="429", backend="gemini", model="sim")
        return None

    oracle = Oracle(override=broke)
    out = run(example, oracle, tasks=NEUTRALS_VERIFIED)
    assert oracle.phases[1] == ["ex1/can/verify", "ex1/para/verify"]
    assert sorted(r["kind"] for r in table(out, "pairs")) == ["neutral_can", "neutral_para", "original"]


def test_neutral_control_probes_show_each_neutral_verifier_an_answer_it_must_fail(example):
    honest = run(example, Oracle(), tasks=NEUTRALS_VERIFIED, other=OTHER, control=True)
    verdicts = {(r["verifier"], r["probe"], r["passed"]) for r in table(honest, "controls")}
    assert verdicts == {
        ("causal", "original", False), ("causal", "unrelated", False),
        ("neutral_can", "unchanged", False), ("neutral_can", "unrelated", False),
        ("neutral_para", "other_answer", False), ("neutral_para", "unrelated", False),
    }  # fmt: skip
    lazy = run(example, Oracle(p_false_pass=1.0), tasks=NEUTRALS_VERIFIED, other=OTHER, control=True)
    assert all(r["passed"] for r in table(lazy, "controls")) and len(table(lazy, "controls")) == 6
    unverified = run(example, Oracle(), other=OTHER, control=True)  # verify_neutrals unresolved: off
    assert {r["verifier"] for r in table(unverified, "controls")} == {"causal"}
