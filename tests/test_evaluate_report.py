"""The evaluation's numbers and report with their uncertainty: every accuracy, drop and shift with
its 95% interval, every subset shown whatever its name, and each model against the baseline as
a paired difference marked when it is distinguishable from zero."""

from __future__ import annotations

import pytest

from crome_ray.evaluate.categories import REWARDBENCH_CATEGORIES
from crome_ray.evaluate.job import compare
from crome_ray.evaluate.metrics import ScoredVariant, model_metrics, per_item
from crome_ray.evaluate.report import difference_cell, markdown, plots
from crome_ray.evaluate.variants import CUE_ON_CHOSEN, CUE_ON_REJECTED, ORIGINAL

CATS = {k: list(v) for k, v in REWARDBENCH_CATEGORIES.items()}


def scored(right: int, n: int = 40, subset: str = "my-heldout", cue_flips: int = 0) -> list[ScoredVariant]:
    """``n`` pairs, the first ``right`` scored right; each with a typo variant (one fewer right)
    and the cue probes (the cue adds 1.0 to an answer's score; ``cue_flips`` pairs flip)."""
    rows = []
    for i in range(n):
        c, r = (2.0, 1.0) if i < right else (1.0, 2.0)
        pid = f"p{i}"
        rows.append(ScoredVariant("d", pid, subset, ORIGINAL, c, r, prompt_id=f"q{i}"))
        rows.append(ScoredVariant("d", pid, subset, "typo", c if i else r, r if i else c, prompt_id=f"q{i}"))
        bump = 1.5 if i < cue_flips else 0.5
        rows.append(ScoredVariant("d", pid, subset, CUE_ON_REJECTED, c, r + bump, prompt_id=f"q{i}"))
        rows.append(ScoredVariant("d", pid, subset, CUE_ON_CHOSEN, c + bump, r, prompt_id=f"q{i}"))
    return rows


def metrics(rows):
    return model_metrics(rows, categories=CATS, seed=0, reps=500)


def doc(models, items=None):
    return {
        "run_name": "eval-test",
        "models": models,
        "data": [{"name": "d", "uri": "/x", "pairs": 40}],
        "tie_rule": "equal scores count as 1/2",
        "upweight_math": True,
        "cue": {"text": "Sure!", "position": "start"},
        "bootstrap_reps": 500,
        "differences": compare(list(models), items, 0, 500) if items else None,
    }


def test_every_number_carries_its_interval():
    m = metrics(scored(24))
    iv = m["intervals"]
    assert iv["overall"]["value"] == pytest.approx(0.6) and iv["overall"]["method"] == "wilson"
    assert iv["overall"]["low"] < 0.6 < iv["overall"]["high"]
    assert iv["subsets"]["my-heldout"]["value"] == pytest.approx(0.6)
    t = iv["transformations"]["typo"]
    assert t["accuracy"]["value"] == pytest.approx(m["transformations"]["typo"]["accuracy"])
    assert t["drop"]["value"] == pytest.approx(m["transformations"]["typo"]["drop"])
    assert t["shift_in_spread"]["value"] == pytest.approx(
        m["transformations"]["typo"]["shift"]["mean_in_spread"]
    )
    assert iv["cue_shift_in_spread"]["value"] == pytest.approx(m["cue"]["shift"]["mean_in_spread"])
    assert iv["accuracy_cue_on_rejected"]["value"] == pytest.approx(m["cue"]["accuracy_cue_on_rejected"])


def test_the_report_shows_a_subset_outside_rewardbench_with_its_interval():
    m = metrics(scored(24))
    assert m["categories"] == {} and m["unmapped_subsets"] == ["my-heldout"]
    md = markdown(doc({"baseline": m}))
    section = md.split("## Per subset", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| my-heldout |"))
    lo, hi = m["intervals"]["subsets"]["my-heldout"]["low"], m["intervals"]["subsets"]["my-heldout"]["high"]
    assert row == f"| my-heldout | 40 | 0.600 [{lo:.2f}, {hi:.2f}] |"
    assert "in none: `my-heldout`" in section


def test_a_real_difference_is_marked_and_noise_is_not():
    base, better, same = scored(20), scored(28), scored(20)
    items = {
        k: per_item(v, categories=CATS) for k, v in (("baseline", base), ("crome", better), ("twin", same))
    }
    models = {k: metrics(v) for k, v in (("baseline", base), ("crome", better), ("twin", same))}
    d = compare(list(models), items, 0, 500)
    assert d["baseline"] == "baseline"
    up = d["models"]["crome"]["overall"]
    assert up["value"] == pytest.approx(0.2) and up["distinguishable"] and up["p_value"] < 0.05
    twin = d["models"]["twin"]["overall"]
    assert (twin["value"], twin["p_value"], twin["distinguishable"]) == (0.0, 1.0, False)
    md = markdown(doc(models, items))
    section = md.split("## Differences against baseline", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| all pairs |"))
    assert row.split(" | ")[1].endswith("p<0.004 ✓")  # crome − baseline: below what 500 resamples show
    assert not row.split(" | ")[2].rstrip(" |").endswith("✓")  # twin − baseline
    assert difference_cell(twin) == "+0.000 [+0.00, +0.00] p=1.000"


def test_the_cue_difference_is_paired_over_the_same_pairs():
    base, hacked = scored(30), scored(30, cue_flips=12)
    items = {"baseline": per_item(base, categories=CATS), "hacked": per_item(hacked, categories=CATS)}
    d = compare(["baseline", "hacked"], items, 0, 500)["models"]["hacked"]
    assert d["accuracy_cue_on_rejected"]["value"] == pytest.approx(-12 / 40)
    assert d["accuracy_cue_on_rejected"]["distinguishable"]
    assert d["cue_shift_in_spread"]["value"] > 0 and d["cue_shift_in_spread"]["distinguishable"]
    assert d["overall"]["value"] == 0.0 and not d["overall"]["distinguishable"]


def test_the_plots_draw_the_intervals():
    m = metrics(scored(24))
    with_ivs = plots(doc({"baseline": m}))
    bare = plots(doc({"baseline": {k: v for k, v in m.items() if k != "intervals"}}))
    for name in with_ivs:
        assert with_ivs[name][:8] == b"\x89PNG\r\n\x1a\n"
        assert with_ivs[name] != bare[name], name  # the error bars change the picture
