"""The quality gate per oracle-written kind (augment.gate): what the manifest reports, and when a
kind is left out of the training pairs, with the reason in one line."""

from collections import Counter

from crome_ray.augment.config import QualityGate
from crome_ray.augment.gate import reports

GATE = QualityGate()
ON = ["causal_degrade", "causal_upgrade", "neutral_can", "neutral_para"]


def gate(stats=(), accepted=(), rejected=(), controls=(), g=GATE, on=ON):
    return reports(Counter(dict(stats)), Counter(dict(accepted)), Counter(dict(rejected)),
                   Counter(dict(controls)), g, on)  # fmt: skip


def test_each_kind_reports_asked_answered_rejected_verified_and_accepted():
    r = gate(
        stats={"calls_can": 50, "served_can": 48, "verdict_pass_can": 30, "verdict_fail_can": 6},
        accepted={"neutral_can": 28},
        rejected={"can:checks:placeholder": 9, "can:checks:meaning": 3, "can:verify": 6, "can:leakage": 2},
    )["neutral_can"].as_dict()
    assert r == {
        "asked": 50, "answered": 48, "accepted": 28, "accepted_share": round(28 / 48, 4),
        "rejected": {"checks:meaning": 3, "checks:placeholder": 9, "leakage": 2, "verify": 6},
        "verified": {"pass": 30, "fail": 6}, "controls_false_pass_rate": None, "left_out": None, "note": None,
    }  # fmt: skip


def test_a_kind_mostly_refused_is_left_out_with_its_share_and_the_check_that_refused_most():
    r = gate(stats={"calls_para": 48, "served_para": 48}, accepted={"neutral_para": 2},
             rejected={"para:checks:length": 30, "para:checks:echo": 16})["neutral_para"]  # fmt: skip
    assert r.left_out == (
        "2 of 48 rewrites accepted (4% < gate.min_accepted_share 25%); most refused by checks:length (30)"
    )


def test_too_few_answered_is_not_judged_and_says_so():
    r = gate(stats={"calls_para": 5, "served_para": 5}, accepted={})["neutral_para"]
    assert r.left_out is None and r.note == "5 answered, under gate.min_answered 20: not judged"


def test_a_verifier_that_passes_its_control_probes_takes_its_kinds_out():
    stats = {f"{k}_{t}": n for t in ("degrade", "upgrade") for k, n in (("calls", 40), ("served", 40),
             ("verdict_pass", 38), ("verdict_fail", 2))}  # fmt: skip
    out = gate(stats=stats, accepted={"causal_degrade": 38, "causal_upgrade": 38},
               controls={"causal:passed": 3, "causal:failed": 1})  # fmt: skip
    for kind in ("causal_degrade", "causal_upgrade"):
        assert out[kind].left_out == (
            "its verifier passed 75% of its 4 control probes (> gate.max_false_pass_rate 50%): its verdicts "
            "cannot be trusted"
        )
    # a neutral kind is judged by its own probes, not the causal verifier's
    assert gate(stats={"calls_can": 40, "served_can": 40}, accepted={"neutral_can": 30},
                controls={"causal:passed": 4})["neutral_can"].left_out is None  # fmt: skip


def test_floors_are_the_configs_and_kinds_not_asked_for_are_not_reported():
    off = QualityGate(min_accepted_share=None, max_false_pass_rate=None)
    assert gate(stats={"calls_para": 48, "served_para": 48}, g=off)["neutral_para"].left_out is None
    strict = QualityGate(min_accepted_share=0.9, min_answered=1)
    assert gate(stats={"served_para": 2}, accepted={"neutral_para": 1}, g=strict)["neutral_para"].left_out
    assert set(gate(on=["neutral_para"])) == {"neutral_para"}


def test_a_neutral_verifier_that_passes_its_probes_stops_the_run_like_the_causal_one():
    import pytest

    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.errors import AugmentError
    from crome_ray.augment.job import _check_controls
    from crome_ray.augment.tally import Tally

    cfg = AugmentConfig.model_validate({"controls": {"examples": 2, "max_false_pass_rate": 0.25}})
    tally = Tally()
    tally.controls.update({"causal:failed": 4, "neutral_para:passed": 3, "neutral_para:failed": 1})
    tally.examples = 2
    with pytest.raises(AugmentError, match=r"the neutral_para verifier passed 3 of 4 control probes"):
        _check_controls(cfg, tally, 2)
    tally.controls["neutral_para:passed"] = 0
    assert _check_controls(cfg, tally, 2) is True
    assert tally.as_doc()["controls"] and Tally().false_pass_rate("neutral_can") is None
