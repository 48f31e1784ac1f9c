"""Models trained per seed: each number's mean and spread across seeds, and the difference between
models set beside how far a reseed alone moves it; a gap no larger than the seeds' is not marked."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from crome_ray.config import load_config
from crome_ray.evaluate.categories import REWARDBENCH_CATEGORIES
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.evaluate.metrics import model_metrics, per_item
from crome_ray.evaluate.report import headline, markdown
from crome_ray.evaluate.seeds import (
    across,
    beyond_seed_noise,
    manifest_seeds,
    mean_items,
    seed_label,
    seed_report,
)
from crome_ray.summaries import print_seeds
from crome_ray.train.seeds import seed_order
from tests.test_evaluate_report import doc, scored

CATS = {k: list(v) for k, v in REWARDBENCH_CATEGORIES.items()}


def runs(*rights: int, cue_flips: int = 0):
    """One model's seeds: seed i gets the first ``rights[i]`` of 40 pairs right."""
    out = []
    for seed, right in enumerate(rights):
        rows = scored(right, cue_flips=cue_flips)
        m = model_metrics(rows, categories=CATS, seed=0, reps=300)
        out.append((seed, headline(m), per_item(rows, categories=CATS), m))
    return out


def report(**models):
    return seed_report({k: [r[:3] for r in v] for k, v in models.items()}, seed=0, reps=300)


def test_across_seeds_gives_the_mean_the_spread_and_every_value():
    x = across([0.5, 0.6, 0.7, None])
    assert x["mean"] == pytest.approx(0.6) and x["sd"] == pytest.approx(0.1)
    assert (x["min"], x["max"], x["n"], x["values"]) == (0.5, 0.7, 3, [0.5, 0.6, 0.7])
    assert across([0.4])["sd"] == 0.0 and across([None]) is None


def test_the_seed_mean_and_its_interval_are_of_the_seeds_accuracies():
    r = report(baseline=runs(20, 24, 22))
    m = r["models"]["baseline"]
    assert m["seeds"] == [0, 1, 2]
    assert m["metrics"]["overall"]["values"] == [0.5, 0.6, 0.55]
    assert m["metrics"]["overall"]["sd"] == pytest.approx(0.05)
    iv = m["mean_intervals"]["overall"]
    assert iv["value"] == pytest.approx(0.55) and iv["low"] < 0.55 < iv["high"]


def test_seeds_scored_on_other_pairs_cannot_be_averaged():
    a, b = runs(20)[0][2], per_item(scored(20, n=30), categories=CATS)
    with pytest.raises(ValueError, match="different items"):
        mean_items([a, b])


def test_a_gap_larger_than_any_reseed_is_marked_and_one_within_the_seeds_noise_is_not():
    r = report(
        baseline=runs(20, 21, 19),
        crome=runs(30, 31, 29),  # +0.25 against reseeds of at most 0.05
        twin=runs(21, 19, 20),  # no gap
        noisy=runs(24, 36, 24),  # +0.2, distinguishable, but its own seeds differ by 0.3
    )
    between = r["between_models"]["models"]
    assert between["crome"]["overall"]["value"] == pytest.approx(0.25)
    assert beyond_seed_noise(r, "crome", "overall") is True
    assert beyond_seed_noise(r, "twin", "overall") is False
    assert between["noisy"]["overall"]["distinguishable"]
    assert beyond_seed_noise(r, "noisy", "overall") is False
    largest = r["between_seeds"]["noisy"]["largest"]["overall"]
    assert abs(largest["value"]) == pytest.approx(0.3) and largest["seeds"] in ("1 − 0", "2 − 1")


def test_two_identical_seeds_differ_by_zero():
    r = report(baseline=runs(20, 20))
    d = r["between_seeds"]["baseline"]["pairs"]["1 − 0"]["overall"]
    assert (d["value"], d["p_value"], d["distinguishable"]) == (0.0, 1.0, False)


def test_a_model_with_one_seed_is_compared_but_has_no_seed_row():
    r = seed_report(
        {"baseline": [r[:3] for r in runs(20, 22)], "public": [(None, *runs(30)[0][1:3])]}, seed=0, reps=300
    )
    assert "public" not in r["between_seeds"] and r["models"]["public"]["seeds"] == [None]
    assert beyond_seed_noise(r, "public", "overall") is True  # against the baseline's own reseeds


def test_the_report_shows_every_model_across_its_seeds_beside_the_between_model_gap():
    base, crome = runs(20, 21, 19), runs(30, 31, 29)
    d = doc({"baseline": base[0][3], "crome": crome[0][3]})
    d["seeds"] = report(baseline=base, crome=crome)
    md = markdown(d)
    assert "all its seeds below" in md
    section = md.split("## Across training seeds", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| baseline | 0, 1, 2 |"))
    assert "0.500 ± 0.025" in row  # all pairs: 0.500, 0.525, 0.475
    gap = next(line for line in section.splitlines() if line.startswith("| all pairs |"))
    cells = gap.strip("|").split(" | ")
    assert cells[1].startswith("+0.250") and cells[1].endswith("✓ ★")
    assert cells[2].startswith("+0.050") or cells[2].startswith("-0.050")  # baseline: seed to seed
    assert "(seeds 2 − 0)" in cells[2] or "(seeds 2 − 1)" in cells[2]


def test_the_terminal_reads_the_seed_table_from_what_the_manifest_keeps():
    r = manifest_seeds(report(baseline=runs(20, 21, 19), crome=runs(30, 31, 29), twin=runs(21, 19, 20)))
    console = Console(record=True, width=200)
    print_seeds(console, json.loads(json.dumps(r)))  # as read back from manifest.json
    row = next(
        line for line in console.export_text().splitlines() if line.lstrip("│ ").startswith("all pairs")
    )
    assert "0.500 ± 0.025" in row and "+0.250 ★" in row
    assert row.count("★") == 1  # the twin's gap is not marked


def test_a_report_without_seeds_has_no_seed_section():
    assert "Across training seeds" not in markdown(doc({"baseline": runs(20)[0][3]}))


def test_seeds_are_named_once_each_and_only_count_in_the_fingerprint_when_set():
    base = load_config(EvaluateConfig, None, ["models=[m]"])
    seeded = load_config(EvaluateConfig, None, ["models=[m]", "seeds=[0,1,2]"])
    assert base.seeds is None and seeded.seeds == [0, 1, 2]
    assert seeded.fingerprint() != base.fingerprint()
    with pytest.raises(ValueError, match="each seed once"):
        load_config(EvaluateConfig, None, ["models=[m]", "seeds=[0,0]"])
    assert seed_order(5, [0, 1, 5, 1]) == (5, 0, 1) and seed_order(0, [0, 1, 2]) == (0, 1, 2)
    assert seed_label("crome", 2) == "crome@seed2"
