"""The evaluation's intervals: Wilson for one proportion, the bootstrap over prompts for the rest,
and paired differences between two models on the same pairs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from crome_ray.evaluate.intervals import (
    Stratified,
    mean_interval,
    paired_difference,
    weighted_difference,
    weighted_interval,
    wilson,
)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_the_textbook_values(successes, n, low, high):
    w = wilson(successes, n)
    assert (round(w.low, 4), round(w.high, 4)) == (low, high)
    assert w.value == pytest.approx(successes / n) and w.method == "wilson"


def test_one_proportion_gets_wilson_and_a_mean_with_halves_gets_the_bootstrap():
    assert mean_interval([1.0, 0.0, 1.0, 1.0]).method == "wilson"
    assert mean_interval([1.0, 0.5, 1.0, 0.0]).method == "bootstrap"
    # two pairs of one prompt are not two independent trials: the bootstrap, over prompts
    assert mean_interval([1.0, 0.0, 1.0], units=["p", "p", "q"]).method == "bootstrap"
    assert mean_interval([]) is None


def test_the_bootstrap_interval_of_a_constant_is_a_point():
    i = mean_interval([0.5] * 12)
    assert (i.value, i.low, i.high, i.method) == (0.5, 0.5, 0.5, "point")
    odd = mean_interval([0.1343642441124] * 25)  # a constant whose mean rounds: still a point
    assert odd.method == "point" and odd.low == odd.high == odd.value


def test_pairs_of_one_prompt_are_resampled_together():
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.5, 1.0]) for _ in range(30)]
    once = mean_interval(values, units=range(30), seed=7)
    # each prompt's pair twice, the copies of one prompt resampled together: the same interval
    twice = mean_interval(
        [v for v in values for _ in (0, 1)], units=[u for u in range(30) for _ in (0, 1)], seed=7
    )
    assert (twice.low, twice.high) == pytest.approx((once.low, once.high))
    # treated as 60 independent pairs, the same data would claim a narrower interval
    naive = mean_interval([v for v in values for _ in (0, 1)], seed=7)
    assert naive.high - naive.low < 0.8 * (twice.high - twice.low)


def test_the_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    outcomes, probs = np.array([0.0, 0.5, 1.0]), np.array([0.3, 0.2, 0.5])
    true = float(outcomes @ probs)
    covered = 0
    for trial in range(300):
        sample = rng.choice(outcomes, size=40, p=probs).tolist()
        i = mean_interval(sample, seed=trial, reps=1000)
        covered += i.low <= true <= i.high
    assert 0.88 <= covered / 300 <= 0.99


def test_a_model_against_itself_differs_by_zero_with_p_one():
    a = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    d = paired_difference(a, a)
    assert (d.interval.value, d.interval.low, d.interval.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not d.distinguishable


def test_the_paired_difference_sees_what_two_overlapping_intervals_hide():
    a = [1.0] * 20 + [0.0] * 20
    b = [1.0] * 26 + [0.0] * 14  # the same pairs, six more right
    ia, ib = mean_interval(a), mean_interval(b)
    assert ia.high > ib.low  # side by side, the two intervals overlap
    d = paired_difference(a, b)
    assert d.interval.value == pytest.approx(0.15)
    assert d.distinguishable and d.p_value < 0.01
    back = paired_difference(b, a)  # the other way round: the same p, the interval negated
    assert back.p_value == d.p_value
    assert (back.interval.low, back.interval.high) == pytest.approx((-d.interval.high, -d.interval.low))
    few = paired_difference(a, [1.0] * 21 + [0.0] * 19)  # one pair of forty: not distinguishable
    assert not few.distinguishable and few.p_value > 0.3


def test_intervals_are_seeded():
    rng = random.Random(1)
    values = [rng.random() for _ in range(25)]
    assert mean_interval(values, seed=4) == mean_interval(values, seed=4)
    assert mean_interval(values, seed=4) != mean_interval(values, seed=5)


def test_a_weighted_category_mean_keeps_its_weights_and_pairs_two_models():
    a = Stratified(
        {"x": [1.0, 0.0, 1.0, 1.0], "y": [0.0, 0.0, 1.0], "z": [1.0, 1.0]},
        {"x": ["1", "2", "3", "4"], "y": ["5", "6", "7"], "z": ["8", "9"]},
    )
    combine = {"C1": {"x": 4, "y": 3}, "C2": {"z": 1}, "C3": {"absent": 5}}
    i = weighted_interval(a, combine)
    # C1: (0.75·4 + 1/3·3) / 7 = 4/7; C2: 1; the mean of the categories with data
    assert i.value == pytest.approx((4 / 7 + 1) / 2)
    assert i.low <= i.value <= i.high and i.low < i.high
    same = weighted_difference(a, a, combine)
    assert same.interval.value == 0 and same.p_value == 1.0
    b = Stratified({**a.values, "y": [1.0, 1.0, 1.0]}, a.units)
    d = weighted_difference(a, b, combine)
    assert d.interval.value == pytest.approx((6 / 7 - 4 / 7) / 2)  # C1 moved by 2/7, C2 not at all
    assert d.interval.value == pytest.approx(weighted_interval(b, combine).value - i.value)


def test_all_right_over_a_few_prompts_is_no_certainty():
    # two pairs per prompt, all right: the bootstrap sees no spread; Wilson over the 6 prompts does
    i = mean_interval([1.0] * 12, units=[u for u in range(6) for _ in (0, 1)])
    assert i.value == 1.0 and i.high == 1.0 and i.low == pytest.approx(wilson(6, 6).low) and i.low < 0.7


def test_a_difference_seen_on_one_prompt_is_not_distinguishable_and_on_many_it_is():
    one = paired_difference([0.0, 0.0], [1.0, 1.0], units=["p", "p"])
    assert one.interval.value == 1.0 and one.p_value == 1.0 and not one.distinguishable
    many = paired_difference([0.0] * 20, [1.0] * 20)  # right on every pair where the other is wrong
    assert many.p_value == pytest.approx(2 * 0.5**20) and many.distinguishable
