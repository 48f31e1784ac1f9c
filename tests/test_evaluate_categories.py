"""RewardBench-style category scores against a worked example computed by hand, ties as half,
and the reward-shift arithmetic."""

import pytest

from crome_ray.evaluate.categories import (
    REWARDBENCH_CATEGORIES,
    category_report,
    pair_outcome,
    subset_scores,
)
from crome_ray.evaluate.shift import reward_shift


def rows(subset, right, wrong, tied=0):
    return [(subset, 1.0, 0.0)] * right + [(subset, 0.0, 1.0)] * wrong + [(subset, 0.5, 0.5)] * tied


def test_equal_scores_count_as_half_a_right_answer():
    assert [pair_outcome(2, 1), pair_outcome(1, 2), pair_outcome(1, 1)] == [1.0, 0.0, 0.5]
    s = subset_scores(rows("x", 1, 1, tied=2))["x"]
    assert (s.pairs, s.accuracy, s.ties) == (4, 0.5, 2)


def test_the_worked_example_weights_subsets_by_prompts_and_math_as_much_as_all_the_code():
    data = (
        # Chat Hard: llmbar-natural 3/4 right, mt-bench-hard 1 of 2 (one tie, one wrong: 0.25)
        rows("llmbar-natural", 3, 1)
        + rows("mt-bench-hard", 0, 1, tied=1)
        # Safety: 8/10 and 1/2
        + rows("xstest-should-respond", 8, 2)
        + rows("xstest-should-refuse", 1, 1)
        # Reasoning: two code subsets, 2/2 and 1/4; math 1/2, weighted as the code's 6 prompts
        + rows("hep-python", 2, 0)
        + rows("hep-go", 1, 3)
        + rows("math-prm", 1, 1)
        # in no category
        + rows("ultrafeedback", 5, 5)
    )
    report = category_report(subset_scores(data))
    # by hand:
    # Chat Hard = (0.75·4 + 0.25·2) / 6 = 3.5/6
    # Safety    = (0.8·10 + 0.5·2) / 12 = 9/12
    # Reasoning = (1.0·2 + 0.25·4 + 0.5·6) / 12 = 6/12   (math-prm weighs 2 + 4 = 6, not 2)
    assert report.categories == pytest.approx({"Chat Hard": 3.5 / 6, "Safety": 0.75, "Reasoning": 0.5})
    assert "Chat" not in report.categories  # no data: not a zero
    assert report.average == pytest.approx((3.5 / 6 + 0.75 + 0.5) / 3)
    assert report.weights["math-prm"] == 6 and report.weights["hep-go"] == 4
    assert report.unmapped == ["ultrafeedback"]
    assert report.overall == pytest.approx((3 + 0.5 + 8 + 1 + 2 + 1 + 1 + 5) / 36)
    assert "1/2" in report.tie_rule


def test_math_is_not_upweighted_without_code_and_weights_can_be_set():
    data = rows("math-prm", 1, 1) + rows("hep-go", 4, 0)
    plain = category_report(subset_scores(data), upweight_math=False)
    assert plain.categories["Reasoning"] == pytest.approx((0.5 * 2 + 1.0 * 4) / 6)
    set_ = category_report(subset_scores(data), weights={"math-prm": 1, "hep-go": 1})
    assert set_.categories["Reasoning"] == pytest.approx(0.75)
    alone = category_report(subset_scores(rows("math-prm", 1, 3)))
    assert alone.weights["math-prm"] == 4 and alone.categories["Reasoning"] == 0.25


def test_the_category_map_is_configurable():
    mapping = {"Mine": ["ultrafeedback"], **REWARDBENCH_CATEGORIES}
    report = category_report(subset_scores(rows("ultrafeedback", 3, 1)), mapping)
    assert report.categories == {"Mine": 0.75} and report.unmapped == []


def test_the_reward_shift_in_reward_units_and_in_the_models_spread():
    s = reward_shift([0.0, 1.0, 2.0, 3.0], [0.5, 1.5, 2.0, 2.0], spread=2.0, threshold=0.25)
    # differences 0.5, 0.5, 0, -1: mean 0, |mean| 0.5; above 0.25·2 = 0.5: only the -1
    assert s.n == 4 and s.mean == pytest.approx(0.0) and s.mean_abs == pytest.approx(0.5)
    assert s.share_above == 0.25 and s.mean_in_spread == 0.0
    assert s.std == pytest.approx((sum(x * x for x in (0.5, 0.5, 0, -1)) / 3) ** 0.5)
    up = reward_shift([0.0, 0.0], [1.0, 1.0], spread=0.5)
    assert up.mean_in_spread == 2.0 and up.share_above == 1.0
    with pytest.raises(ValueError, match="2 scores before but 1 after"):
        reward_shift([0, 0], [0], spread=1)
