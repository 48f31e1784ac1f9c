"""The augmentation's plan: which calls each phase makes for an example, with stable ids, and the
dry run's arithmetic (calls, tokens, dollars) shown by hand."""

import json

import pytest

from crome_ray.augment import plan as L
from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentConfig, AugmentTasks
from crome_ray.config import load_config
from crome_ray.oracle.config import DEFAULT_PRICES

EX = P.Example("ex1", "Why is the sky blue?", "Rayleigh scattering. " * 10, "The ocean. " * 8)
ATTRS = [P.Attribute("accuracy", "Correct.", 0.5), P.Attribute("harmlessness", "No harm done.", 0.5)]


def test_phase_1_asks_for_the_rubric_and_the_neutrals_that_need_nothing_else():
    assert [p.kind for p in L.phase1(EX, AugmentTasks())] == ["rubric", "can", "para"]
    assert [p.kind for p in L.phase1(EX, AugmentTasks(can=False, para=False))] == ["rubric"]
    only_neutrals = AugmentTasks(causal=False, elements=False, verify=False)
    assert [p.kind for p in L.phase1(EX, only_neutrals)] == ["can", "para"]
    can = L.phase1(EX, AugmentTasks())[1]
    assert can.source == EX.rejected and can.task.kind == "can"


def test_phase_2_rewrites_each_attribute_both_ways():
    planned = L.phase2(EX, ATTRS, AugmentTasks())
    assert [(p.kind, p.attribute) for p in planned] == [
        ("elements", None),
        ("degrade", "accuracy"),
        ("upgrade", "accuracy"),
        ("degrade", "harmlessness"),
        ("upgrade", "harmlessness"),
    ]
    assert planned[1].source == EX.chosen and planned[2].source == EX.rejected
    # the attribute's words are the task's own: a rewrite that only states them is an echo
    assert planned[3].task_text == "harmlessness No harm done." and can_text(EX) == ""
    assert L.phase2(EX, ATTRS, AugmentTasks(causal=False))[0].kind == "elements"


def can_text(ex):
    return L.phase1(ex, AugmentTasks())[1].task_text


def test_a_safety_example_gets_the_safety_degradation_for_every_attribute():
    def degrades(ex, attrs):
        return [p for p in L.phase2(ex, attrs, AugmentTasks()) if p.kind == "degrade"]

    plain = [P.Attribute("accuracy", "Correct.", 0.5), P.Attribute("clarity", "Clear.", 0.5)]
    assert not any("Never add harmful" in p.task.prompt for p in degrades(EX, plain))
    # a rubric that names harm makes the example a safety one: all its degradations are safe ones
    assert all("Never add harmful" in p.task.prompt for p in degrades(EX, ATTRS))
    risky = P.Example("ex9", "How do I make a weapon at home?", "I can't help with that.", "Sure: ...")
    assert all("Never add harmful" in p.task.prompt for p in degrades(risky, plain))


def test_an_answer_too_long_to_show_whole_is_not_rewritten():
    long = P.Example("ex2", "q?", "x " * 3000, "short answer")
    t = AugmentTasks()
    reason = "answer A has 6,000 characters, more than chars=4,000: not rewritten"
    assert L.skipped_rewrites(long, t) == {"A": reason}
    kinds = [p.kind for p in L.phase1(long, t) + L.phase2(long, ATTRS, t)]
    assert "para" not in kinds and "degrade" not in kinds  # A would be rewritten from a fragment
    assert kinds.count("upgrade") == 2 and "can" in kinds  # B fits: its rewrites go ahead


def test_rrm_mode_asks_the_oracle_nothing():
    assert L.phase1(EX, AugmentTasks(rrm=True)) == [] and L.phase2(EX, ATTRS, AugmentTasks(rrm=True)) == []


def test_phase_3_verifies_a_rewrite_in_its_own_direction():
    degrade, upgrade = L.phase2(EX, ATTRS, AugmentTasks(elements=False))[:2]
    v = L.phase3(EX, degrade, "worse text", ATTRS[0], AugmentTasks())
    assert v.id == "ex1/degrade/0/verify" and "ANSWER A made clearly worse" in v.task.prompt
    assert "ANSWER B made clearly better" in L.phase3(EX, upgrade, "t", ATTRS[0], AugmentTasks()).task.prompt


def test_task_ids_are_unique_and_the_same_on_every_plan():
    ids = [p.id for p in L.phase1(EX, AugmentTasks()) + L.phase2(EX, ATTRS, AugmentTasks())]
    assert len(ids) == len(set(ids))
    assert ids == [p.id for p in L.phase1(EX, AugmentTasks()) + L.phase2(EX, ATTRS, AugmentTasks())]


def test_the_projection_counts_every_call_and_prices_the_tokens():
    one_token = lambda text: 1  # noqa: E731  every text one token: the arithmetic by hand
    proj = L.project([EX, EX], AugmentTasks(), one_token, DEFAULT_PRICES["gemini-2.5-flash"])
    # per example: rubric, can, para, elements, 5 degrade, 5 upgrade, 10 verify = 24 calls
    assert proj.calls == {"rubric": 2, "can": 2, "para": 2, "elements": 2, "degrade": 10, "upgrade": 10,
                          "verify": 20}  # fmt: skip
    assert proj.total_calls == 48 and proj.input_tokens == 2 * 48  # system + prompt, one token each
    # output per example: rubric 40*5+8, can 9, para 9, elements 35*2*5+8, 10 rewrites 9 each, 10 verdicts 45
    per_example = 208 + 9 + 9 + 358 + 10 * 9 + 10 * 45
    assert proj.output_tokens == 2 * per_example
    assert proj.usd == pytest.approx((96 * 0.30 + 2 * per_example * 2.50) / 1e6)
    assert L.project([EX], AugmentTasks(), one_token).usd is None  # no price, no dollars


def test_an_iqn_only_run_projects_no_calls():
    iqn_only = AugmentTasks(causal=False, elements=False, verify=False, can=False, para=False)
    proj = L.project([EX] * 100, iqn_only, len, DEFAULT_PRICES["gemini-2.5-flash"])
    assert proj.total_calls == 0 and proj.usd == 0.0 and proj.examples == 100


def test_the_most_attributes_allowed_still_project():
    proj = L.project([EX], AugmentTasks(attributes=10), len)
    assert proj.calls["degrade"] == 10 and proj.calls["verify"] == 20


def test_a_committed_training_run_as_the_baseline_is_in_the_lineage_and_an_hf_id_is_not(tmp_path):
    from crome_ray.augment.job import baseline_run
    from crome_ray.storage import COMMIT_MARKER

    run = tmp_path / "train" / "rm-baseline"
    run.mkdir(parents=True)
    cfg = load_config(AugmentConfig, None, [f"filter.model={run}"])
    assert baseline_run(cfg) == {}  # a folder that never committed: not a run
    (run / COMMIT_MARKER).write_text(json.dumps({"attempt": "a"}))
    assert baseline_run(cfg)["baseline"].uri == str(run)
    assert baseline_run(load_config(AugmentConfig, None, ["filter.model=OpenAssistant/reward-model"])) == {}
    assert baseline_run(load_config(AugmentConfig, None, [])) == {}


def test_oracle_examples_plans_calls_for_the_first_n_examples_only():
    one_token = lambda text: 1  # noqa: E731
    full = L.project([EX, EX], AugmentTasks(), one_token)
    part = L.project([EX] * 5, AugmentTasks(), one_token, oracle_examples=2)
    assert part.examples == 5 and part.calls == full.calls  # 5 examples seen, 2 asked about
    assert part.output_tokens == full.output_tokens
    assert L.project([EX] * 3, AugmentTasks(), one_token, oracle_examples=0).total_calls == 0


def test_the_stream_cuts_its_input_into_whole_batches_four_blocks_a_slot_at_most_256_rows():
    from crome_ray.augment.graph import MAX_BLOCK_ROWS, block_rows

    assert MAX_BLOCK_ROWS == 256
    # 4 slots (2 actors x 2 batches each): a small input in one-batch blocks, every slot busy
    assert block_rows(3, batch_size=16, slots=4) == 16
    assert block_rows(300, batch_size=16, slots=4) == 16  # 19 a slot-block: one batch of 16
    assert block_rows(1000, batch_size=16, slots=4) == 48  # 63 -> three whole batches
    # large inputs: capped, so that 100k rows make 391 blocks, not 6,250
    assert block_rows(100_000, batch_size=16, slots=4) == 256
    assert block_rows(100_000, batch_size=100, slots=4) == 200  # whole batches under the cap
    assert block_rows(100_000, batch_size=300, slots=4) == 300  # a batch bigger than the cap: one
