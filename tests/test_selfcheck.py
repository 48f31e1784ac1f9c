"""The self-check's verdict, read from an evaluation's numbers: did the baseline learn the planted
attribute, does the positive control remove it, and how much of that does Crome deliver; each
claim only where its interval says so."""

import pytest

from crome_ray.pipeline.selfcheck import verdict


def shift(value: float, low: float, high: float) -> dict:
    return {"value": value, "low": low, "high": high, "method": "bootstrap", "n": 40}


def diff(value: float, low: float, high: float) -> dict:
    sure = low > 0 or high < 0
    return {**shift(value, low, high), "p_value": 0.001 if sure else 0.4, "p_resolution": 0.001,
            "distinguishable": sure}  # fmt: skip


def details(base, control, crome, d_control, d_crome) -> dict:
    def model(s):
        return {"intervals": {"cue_shift_in_spread": s, "accuracy_cue_on_rejected": shift(0.5, 0.4, 0.6)}}

    return {
        "models": {"baseline": model(base), "crome": model(crome), "control": model(control)},
        "differences": {"baseline": "baseline", "models": {"control": {"cue_shift_in_spread": d_control},
                                                            "crome": {"cue_shift_in_spread": d_crome}}},
    }  # fmt: skip


def test_a_control_that_removes_most_of_a_learned_shift_says_the_loss_can_and_how_much_crome_delivers():
    v = verdict(details(shift(1.0, 0.8, 1.2), shift(0.2, 0.0, 0.4), shift(0.6, 0.4, 0.8),
                        diff(-0.8, -1.0, -0.6), diff(-0.4, -0.6, -0.2)))  # fmt: skip
    assert v.learned and v.control_distinguishable and v.crome_distinguishable
    assert v.removed_by_control == pytest.approx(0.8) and v.removed_by_crome == pytest.approx(0.4)
    assert v.crome_of_control == pytest.approx(0.5)
    text = "\n".join(v.lines)
    assert "can remove the attribute" in text and "delivers 50% of the control's reduction" in text
    assert "control: +0.20 [+0.00, +0.40] spreads (80% of the baseline's removed)" in text


def test_a_baseline_that_did_not_learn_the_attribute_makes_the_check_say_nothing():
    v = verdict(details(shift(0.1, -0.1, 0.3), shift(0.0, -0.2, 0.2), shift(0.05, -0.1, 0.2),
                        diff(-0.1, -0.3, 0.1), diff(-0.05, -0.2, 0.1)))  # fmt: skip
    assert not v.learned and v.crome_of_control is None
    assert "says nothing" in "\n".join(v.lines) and "can remove" not in "\n".join(v.lines)


def test_a_control_whose_difference_reaches_zero_is_not_called_a_removal():
    v = verdict(details(shift(1.0, 0.8, 1.2), shift(0.8, 0.5, 1.1), shift(0.9, 0.6, 1.2),
                        diff(-0.2, -0.5, 0.1), diff(-0.1, -0.4, 0.2)))  # fmt: skip
    assert v.learned and not v.control_distinguishable
    text = "\n".join(v.lines)
    assert "did not remove the attribute distinguishably" in text and "can remove" not in text


def test_an_evaluation_without_the_cue_is_refused():
    with pytest.raises(ValueError, match="cue"):
        verdict({"models": {"baseline": {"intervals": {}}}})


def test_with_seeds_the_verdict_is_on_the_seed_means_with_each_shifts_spread():
    one_seed = details(shift(1.0, 0.8, 1.2), shift(0.9, 0.7, 1.1), shift(1.0, 0.8, 1.2),
                       diff(-0.1, -0.3, 0.1), diff(0.0, -0.2, 0.2))  # fmt: skip

    def seeded(value, low, high, sd):
        return {"seeds": [0, 1, 2], "mean_intervals": {"cue_shift_in_spread": shift(value, low, high)},
                "metrics": {"cue_shift_in_spread": {"mean": value, "sd": sd, "n": 3}}}  # fmt: skip

    one_seed["seeds"] = {
        "models": {"baseline": seeded(1.0, 0.9, 1.1, 0.05), "control": seeded(0.3, 0.2, 0.4, 0.1),
                   "crome": seeded(0.7, 0.6, 0.8, 0.12)},
        "between_models": {"baseline": "baseline", "models": {
            "control": {"cue_shift_in_spread": diff(-0.7, -0.8, -0.6)},
            "crome": {"cue_shift_in_spread": diff(-0.3, -0.4, -0.2)}}},
    }  # fmt: skip
    v = verdict(one_seed)
    assert v.removed_by_control == pytest.approx(0.7) and v.control_distinguishable
    assert v.removed_by_crome == pytest.approx(0.3) and v.crome_of_control == pytest.approx(3 / 7)
    text = "\n".join(v.lines)
    assert v.lines[0] == "on the means over training seeds 0, 1, 2:"
    assert "control: +0.30 [+0.20, +0.40] spreads (± 0.10 across 3 seeds) (70% of the baseline's" in text
