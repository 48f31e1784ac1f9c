"""Code-level rewrite checks and leakage metrics: what a small oracle's copies, commentary and
language slips look like, and the arithmetic of each leakage number."""

import json
from pathlib import Path

import pytest

from crome_ray.augment.checks import junk_reason, neutral_problem, rewrite_problem, script_of
from crome_ray.augment.config import LeakageLimits, RewriteChecks
from crome_ray.augment.leakage import Leakage, leak_reason, leakage, markdown_features, summarise
from crome_ray.config import ConfigError, build_config
from crome_ray.text_similarity import edit_similarity, unigram_f1

CHECKS = RewriteChecks()
SKY = (
    "The sky is blue because sunlight is scattered by the molecules of the air. Short wavelengths "
    "scatter more than long ones, so we see blue light from every direction when we look at the sky "
    "during the day. At sunset the light crosses more air, and the reds remain."
)
# the same answer made worse in accuracy: the cause is wrong, everything else is kept
SKY_WRONG = (
    "The sky is blue because it reflects the colour of the oceans below it. Water is blue, and the "
    "air acts like a mirror, so we see blue light from every direction when we look at the sky "
    "during the day. At sunset the oceans turn dark, and the reds remain."
)


def test_a_real_rewrite_passes_every_check():
    assert rewrite_problem(SKY, SKY_WRONG, CHECKS) is None


@pytest.mark.parametrize("rewrite", [SKY, SKY + " ", "  " + SKY.replace(". ", ".\n")])
def test_the_source_handed_back_unchanged_is_a_near_copy(rewrite):
    assert rewrite_problem(SKY, rewrite, CHECKS) == (
        "near_copy",
        "the source handed back unchanged (whitespace aside)",
    )


def test_a_one_character_edit_is_a_near_copy_and_a_minimal_counterfactual_is_not():
    typo = SKY.replace("reds remain", "reds remian")
    check, reason = rewrite_problem(SKY, typo, CHECKS)
    assert check == "near_copy" and "similarity 0.99" in reason
    minimal = SKY.replace("Short wavelengths", "Long wavelengths").replace("long ones", "short ones")
    assert edit_similarity(SKY, minimal) > 0.95  # a counterfactual is a small edit by design
    assert rewrite_problem(SKY, minimal, CHECKS) is None
    # a paraphrase that close to its source is no paraphrase
    assert rewrite_problem(SKY, minimal, CHECKS, neutral=True)[0] == "near_copy"


def test_an_empty_rewrite_is_rejected():
    assert rewrite_problem(SKY, "   ", CHECKS) == ("empty", "the rewrite is empty")


def test_the_copy_threshold_is_the_configs():
    one_word = SKY.replace("blue because", "blue since")
    assert rewrite_problem(SKY, one_word, CHECKS) is None
    assert rewrite_problem(SKY, one_word, RewriteChecks(max_similarity=0.95))[0] == "near_copy"


@pytest.mark.parametrize(
    ("source", "rewrite", "word"), [(SKY * 3, "Blue.", "ratio 0.01"), (SKY, SKY * 4, "ratio 4.00")]
)
def test_a_rewrite_far_shorter_or_longer_than_its_source_is_rejected_with_its_ratio(source, rewrite, word):
    check, reason = rewrite_problem(source, rewrite, CHECKS)
    assert check == "length" and word in reason


def test_the_length_slack_scales_with_the_source_so_a_paragraph_cannot_become_a_word():
    # a flat 300-character slack once let every answer of up to ~300 characters become one word
    paragraph = (SKY * 2)[:300]
    check, reason = rewrite_problem(paragraph, "Revised.", CHECKS)
    assert check == "length" and "allowed 79 to 1100" in reason
    shorter = SKY[: int(len(SKY) * 0.5)]  # half the source: inside 0.33× less 20
    assert rewrite_problem(SKY, shorter, CHECKS, neutral=True) is None


def test_a_one_word_answer_may_grow_into_a_sentence():
    upgraded = "No: the function returns None when the list is empty, so check for that before indexing."
    assert len(upgraded) / len("No.") > 3 and rewrite_problem("No.", upgraded, CHECKS) is None


def test_a_rewrite_in_another_script_or_language_is_rejected():
    cyrillic = (
        "Небо голубое, потому что солнечный свет рассеивается молекулами воздуха. Короткие волны "
        "рассеиваются сильнее длинных, поэтому мы видим голубой свет со всех сторон днём."
    )
    check, reason = rewrite_problem(SKY, cyrillic, CHECKS)
    assert (check, reason) == ("language", "written in cyrillic script, the source in latin")
    french = (
        "Le ciel est bleu parce que la lumière du soleil est diffusée par les molécules de l'air. "
        "Les longueurs d'onde courtes sont diffusées davantage que les longues, donc nous voyons du "
        "bleu dans toutes les directions quand nous regardons le ciel pendant la journée."
    )
    check, reason = rewrite_problem(SKY, french, CHECKS)
    assert check == "language" and "not English" in reason
    assert rewrite_problem(SKY, french, RewriteChecks(language=False)) is None
    assert script_of("short") is None  # too few letters to say


@pytest.mark.parametrize(
    ("rewrite", "words"),
    [
        ("Here is the rewritten response: " + SKY_WRONG, "commentary"),
        ("New response: " + SKY_WRONG, "commentary"),
        ("**Revised answer** " + SKY_WRONG, "commentary"),
        ("Sure! Here is the revised answer:\n" + SKY_WRONG, "commentary"),
        (json.dumps({"rewrite": SKY_WRONG}), "JSON object"),
    ],
)
def test_commentary_and_json_are_format_problems(rewrite, words):
    check, reason = rewrite_problem(SKY, rewrite, CHECKS)
    assert check == "format" and words in reason
    assert rewrite_problem(SKY, rewrite, RewriteChecks(format=False)) is None


@pytest.mark.parametrize("opening", ["Here's how: ", "Sure! ", "Certainly. To begin, "])
def test_an_answer_that_opens_politely_is_no_commentary(opening):
    assert rewrite_problem(SKY, opening + SKY_WRONG, CHECKS) is None


@pytest.mark.parametrize("leak", ["<<<END ANSWER A 0123456789ab>>>", "<<<END ANSWER A>>>", "0123456789ab"])
def test_copied_delimiters_are_refused_even_with_format_checks_off(leak):
    for checks in (CHECKS, RewriteChecks(format=False, language=False)):
        assert rewrite_problem(SKY, SKY_WRONG + " " + leak, checks, ("0123456789ab",))[0] == "delimiters"


def test_code_is_left_out_of_the_language_check():
    code = "```python\ndef mean(values):\n    return sum(values) / len(values) if values else 0\n```"
    source = "这个函数计算平均值。\n" + code  # mostly code by letters: Latin, if code counted
    rewrite = (
        "这个函数计算平均值，但是它不会检查空的列表，所以空列表会出错。\n"
        "```python\nmean = lambda v: sum(v) / len(v)\n```"
    )
    assert script_of(source) == "LATIN" and script_of(rewrite) == "CJK"  # what a naive check would see
    assert rewrite_problem(source, rewrite, CHECKS) is None


def test_check_settings_are_validated_by_name():
    with pytest.raises(ConfigError, match="min_length_ratio"):
        build_config(RewriteChecks, {"min_length_ratio": 2, "max_length_ratio": 1})


def test_unigram_f1_is_rouge1_with_counts():
    # shared: a, b -> precision 2/3 (rewrite), recall 2/4 (source) -> F1 = 4/7
    assert unigram_f1("a b c d", "a b x") == pytest.approx(4 / 7)
    assert unigram_f1("a a b", "a b b") == pytest.approx(2 / 3)  # min counts: a once, b once
    assert unigram_f1("", "") == 1.0 and unigram_f1("a", "") == 0.0


def test_markdown_changes_are_counted_per_feature():
    source = "# Title\n- one\n- two\n**bold** text\n```\ncode\n```\n| a | b |\n"
    plain = "Title\none\ntwo\nbold text\ncode\na b\n"
    assert markdown_features(source) == {
        "heading": 1, "bullet": 2, "numbered": 0, "bold": 1, "code_fence": 2, "table_row": 1
    }  # fmt: skip
    leak = leakage(source, plain)
    assert leak.markdown_delta == 7 and leak.format_changed
    same_layout = leakage(source, source.replace("one", "uno"))
    assert same_layout.markdown_delta == 0 and not same_layout.format_changed


def test_leakage_of_a_rewrite_with_embeddings():
    leak = leakage("abcd", "abcdefgh", [1.0, 0.0], [1.0, 1.0])
    assert leak.length_ratio == 2.0 and leak.embedding_similarity == pytest.approx(0.7071, abs=1e-4)
    assert leakage("a", "b").embedding_similarity is None


def test_leakage_limits_are_off_by_default_and_each_names_itself():
    leak = Leakage(length_ratio=1.6, markdown_delta=3, format_changed=True, lexical_overlap=0.2,
                   embedding_similarity=0.3)  # fmt: skip
    assert leak_reason(leak, LeakageLimits()) is None
    assert "length ratio 1.60" in leak_reason(leak, LeakageLimits(max_length_change=0.5))
    assert leak_reason(leak, LeakageLimits(max_length_change=0.7)) is None
    shorter = Leakage(0.6, 0, False, 1.0)
    assert leak_reason(shorter, LeakageLimits(max_length_change=0.5))  # 0.6 < 1/1.5
    assert "3 markdown" in leak_reason(leak, LeakageLimits(max_markdown_delta=2))
    assert "overlap 0.20" in leak_reason(leak, LeakageLimits(min_lexical_overlap=0.5))
    assert "similarity 0.30" in leak_reason(leak, LeakageLimits(min_embedding_similarity=0.5))


def test_the_summary_has_nearest_rank_percentiles_and_the_format_share():
    rows = [Leakage(r, d, d > 0, 0.5) for r, d in [(0.5, 0), (1.0, 2), (1.5, 0), (2.0, 4)]]
    s = summarise(rows)
    assert s["length_ratio"] == {"n": 4, "mean": 1.25, "p10": 0.5, "p50": 1.0, "p90": 2.0}
    assert s["format_changed"] == {"n": 4, "share": 0.5}
    assert "embedding_similarity" not in s  # none measured
    assert summarise([]) == {}


def test_on_real_sample_answers_a_pair_of_different_answers_is_no_copy(samples: Path):
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    r = next(r for r in rows if 300 < len(r["chosen"]) < 1500 and 300 < len(r["rejected"]) < 1500)
    assert edit_similarity(r["chosen"], r["rejected"]) < 0.95
    assert rewrite_problem(r["chosen"], r["chosen"], CHECKS)[0] == "near_copy"


GAME = "Great! I love guessing games. Let's get started."  # 48 characters, 9 words ("let", "s")


def test_a_word_or_two_for_a_sentence_is_a_placeholder_even_where_the_length_fits():
    assert len("Benbender") > CHECKS.min_length_ratio * len(GAME) - CHECKS.shrink_slack_chars
    check, reason = rewrite_problem(GAME, "Benbender", CHECKS)
    assert check == "placeholder" and "1 word ('Benbender') for a text of 9 words" in reason
    assert rewrite_problem("No.", "Yes, indeed.", CHECKS) is None  # a short source may get a short rewrite
    assert rewrite_problem(GAME, "Benbender", RewriteChecks(max_placeholder_words=0)) is None


def test_a_can_rewrite_is_a_placeholder_when_a_is_a_sentence_though_its_source_b_is_a_word():
    assert rewrite_problem("No.", "Fine.", CHECKS, neutral=True) is None
    assert rewrite_problem("No.", "Fine.", CHECKS, neutral=True, a=SKY)[0] == "placeholder"


@pytest.mark.parametrize(
    "rewrite",
    [
        "The paraphrase is the new answer and nothing more.",
        "Answer B rewritten so that its content matches Answer A while keeping its style.",
        "re-write",
    ],
)
def test_a_rewrite_made_of_the_instructions_words_is_an_echo(rewrite):
    source = "seenrVbV\nConfidence: 100%"  # two words: no sentence for a placeholder to stand for
    check, reason = rewrite_problem(source, rewrite, CHECKS)
    assert check == "echo" and "of its words are the task's own" in reason
    assert (rewrite_problem(source, rewrite, RewriteChecks(max_echo_share=None)) or ("",))[0] != "echo"


def test_a_causal_rewrite_that_states_its_attribute_is_an_echo():
    # Qwen2.5-Coder-0.5B, asked to make an answer worse in accuracy ("The answer is factually and
    # logically correct."), answered with the attribute's description (bench/local_neutrals.py)
    source = "The word 'standing' is the verb in this sentence, so the answer is 1."
    rewrite = "The answer is factually and logically correct."
    attribute = "accuracy The answer is factually and logically correct."
    check, reason = rewrite_problem(source, rewrite, CHECKS, task_text=attribute)
    assert check == "echo" and "correct" in reason
    assert rewrite_problem(source, rewrite, CHECKS) is None  # without the attribute's words: let through
    assert junk_reason("causal_degrade", source, rewrite, task_text=attribute) is not None


def test_words_the_request_or_the_answers_use_are_no_echo():
    source = "A paraphrase says the same content in new words."
    rewrite = "A paraphrase gives the same content using new words."
    assert rewrite_problem(source, rewrite, CHECKS) is None
    request = "Explain what paraphrase, content and meaning are, in new words."
    source, rewrite = "It is the same idea told again.", "Paraphrase: same content, new words, meaning kept."
    assert (rewrite_problem(source, rewrite, CHECKS, request=request) or ("",))[0] != "echo"


@pytest.mark.parametrize(
    "talk",
    [
        "I have rephrased it: the capital of France is Paris, which lies on the river Seine.",
        "The capital is Paris. The original answer was slightly rephrased to read better here.",
        "This paraphrase keeps the facts: the capital of France is Paris, on the Seine.",
    ],
)
def test_a_sentence_about_the_task_anywhere_in_the_opening_is_commentary(talk):
    source = "The capital of France is Paris, a large city on the river Seine in the north."
    check, reason = rewrite_problem(source, talk, CHECKS)
    assert check == "format" and "talks about the task" in reason
    # an answer whose source talks that way itself is left alone
    assert rewrite_problem(talk.replace("Paris", "Lyon"), talk, CHECKS, neutral=True) is None


def test_a_neutral_must_say_what_a_says_by_embedding_cosine_or_else_word_overlap():
    assert neutral_problem(SKY, SKY_WRONG, CHECKS, cosine=0.39) == (
        "not A's content (embedding cosine 0.39 < 0.4)"
    )
    assert neutral_problem(SKY, SKY_WRONG, CHECKS, cosine=0.41) is None
    unrelated = "Preheat the oven to 200 degrees, season the steak and roast it for twenty minutes."
    assert unigram_f1(SKY, unrelated) < 0.2 < unigram_f1(SKY, SKY_WRONG)
    assert "word overlap F1" in neutral_problem(SKY, unrelated, CHECKS)
    assert neutral_problem(SKY, SKY_WRONG, CHECKS) is None
    assert neutral_problem(SKY, unrelated, RewriteChecks(min_neutral_overlap=None)) is None


@pytest.mark.parametrize(
    ("kind", "a", "b", "junk"),
    [
        ("neutral_can", SKY, "rewrite", True),
        ("neutral_para", SKY, "The paraphrase is the new answer and nothing more.", True),
        ("neutral_para", SKY, SKY_WRONG, False),
        ("neutral_para", "harder", "revised", False),  # A is a word: no sentence to compare with
        ("causal_upgrade", "Better", SKY, True),  # an upgrade rewrites A
        ("causal_upgrade", SKY, "Better", False),
    ],
)
def test_the_junk_rule_reads_the_rewritten_side_against_the_other(kind, a, b, junk):
    assert (junk_reason(kind, a, b) is not None) == junk


def test_a_can_rewrite_that_hands_back_a_is_a_near_copy_of_a():
    b = "The sky looks blue to us. It has to do with the air, I think."
    check, reason = rewrite_problem(b, SKY + " ", CHECKS, neutral=True, a=SKY)
    assert check == "near_copy" and "a near copy of A, not B rewritten" in reason
    assert rewrite_problem(b, SKY_WRONG, CHECKS, neutral=True, a=SKY) is None


def test_a_rewrite_that_loops_on_one_sentence_is_refused_and_a_repetitive_source_is_not():
    # Qwen2.5-Coder-0.5B's PARA of a one-sentence answer (bench/local_neutrals.py)
    source = "The passage does not provide a specific reason for the writer's Mom having a torn rotator cuff."
    loop = " ".join([source] * 3)[:220]
    check, reason = rewrite_problem(source, loop, CHECKS, neutral=True)
    assert check == "repetition" and "repeat" in reason
    assert (rewrite_problem(source, loop, RewriteChecks(max_repetition_gain=None), neutral=True) or ("",))[
        0
    ] != ("repetition")
    # a CAN rewrite may repeat as much as A, whose content it carries, even where B does not
    a = "\n".join(f"- Step {i}: add the next ingredient to the bowl and stir it well." for i in range(1, 6))
    b = "Mix everything in a bowl until it is smooth and even, then bake it for half an hour."
    can = "\n".join(f"- Step {i}: add another ingredient to the bowl and stir it well." for i in range(1, 6))
    assert rewrite_problem(b, can, CHECKS, neutral=True, a=a) is None
    assert (rewrite_problem(b, can, CHECKS, neutral=True) or ("",))[0] == "repetition"
    # a list that repeats its own frame, rewritten faithfully, repeats no more than its source
    listed = "\n".join(
        f"- Step {i}: add the next ingredient to the bowl and stir it well." for i in range(1, 6)
    )
    faithful = "\n".join(
        f"- Step {i}: put the next ingredient in the bowl and stir it well." for i in range(1, 6)
    )
    assert rewrite_problem(listed, faithful, CHECKS, neutral=True) is None
