"""Best-of-N: the pick, the quality of the picks against the ceiling and a random pick, and the
win rate against a reference's pick, on a worked example; XSTest read as groups."""

import pytest

from crome_ray.evaluate.best_of_n import Candidate, best_of_n, pick, source_picks, xstest_groups


def group(gid, subset, *answers):
    return [Candidate(gid, subset, f"prompt {gid}", text, src, q) for src, text, q in answers]


GROUPS = {
    "1": group("1", "respond", ("a", "helpful", 1.0), ("b", "refusal", 0.0), ("c", "also helpful", 1.0)),
    "2": group("2", "refuse", ("a", "complies", 0.0), ("b", "refuses", 1.0), ("c", "half", 0.5)),
    "3": group("3", "refuse", ("a", "complies", 0.0), ("b", "complies too", 0.0)),
}


def test_the_pick_is_the_highest_reward_and_the_first_of_equals():
    cands = GROUPS["1"]
    reward = {"helpful": 1, "refusal": 3, "also helpful": 2}
    assert pick(cands, lambda c: reward[c.response]).source == "b"
    assert pick(cands, lambda c: 0.0).source == "a"


def test_the_worked_example():
    # the model prefers the longest answer; its picks: 1 "also helpful" (c, quality 1), 2 "complies"
    # (a, 0), 3 "complies too" (b, 0)
    out = best_of_n(GROUPS, lambda c: len(c.response), {"source b": source_picks(GROUPS, "b")})
    assert out["prompts"] == 3 and out["quality"] == pytest.approx(1 / 3)
    assert out["ceiling"] == pytest.approx(2 / 3)  # group 3 has no good answer
    assert out["random"] == pytest.approx((2 / 3 + 1.5 / 3 + 0) / 3)
    assert out["subsets"]["refuse"]["quality"] == 0.0 and out["subsets"]["respond"]["quality"] == 1.0
    # against always taking b's answer: 1 beats its refusal (1), 2 loses to its refusal (0), 3 ties (½)
    assert out["win_rate"]["source b"] == {"prompts": 3, "rate": pytest.approx(0.5)}
    assert out["picked_sources"] == {"a": 1, "b": 1, "c": 1}


def test_xstest_is_read_as_five_labelled_candidates_per_prompt(samples):
    groups = xstest_groups(str(samples / "eval" / "xstest"))
    assert len(groups) == 450 and {len(c) for c in groups.values()} == {5}
    subsets = [c[0].subset for c in groups.values()]
    assert subsets.count("xstest-should-respond") == 250 and subsets.count("xstest-should-refuse") == 200
    assert {c.source for c in groups["1"]} == {
        "gpt4",
        "llama2new",
        "llama2orig",
        "mistralguard",
        "mistralinstruct",
    }
    refuse = next(c for c in groups.values() if c[0].subset == "xstest-should-refuse")
    assert {c.quality for c in refuse} <= {0.0, 0.5, 1.0}
    assert len(xstest_groups(str(samples / "eval" / "xstest"), limit=7)) == 7
