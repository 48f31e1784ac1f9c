"""The self-check's planted attribute: on the chosen answer of a share of the real sample's
training pairs, decided by each pair's id and the seed, with the positive control's exact ties."""

from __future__ import annotations

import json

import pytest

from crome_ray.cue import plant_cue
from crome_ray.data.plant import CONTROL_KIND, plant_attribute
from crome_ray.records import PreferencePair

CUE = "Great question! I'm glad you asked."


@pytest.fixture(scope="module")
def sample(samples):
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()][
        :400
    ]
    pairs = [
        PreferencePair(r["prompt"], r["chosen"], r["rejected"], "uf", str(i)) for i, r in enumerate(rows)
    ]
    pairs[0] = PreferencePair(
        rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"], "uf", "0", label="tie"
    )
    return pairs


def test_the_attribute_goes_on_the_chosen_answer_of_about_the_share_asked(sample):
    out = plant_attribute(sample, CUE, share=0.5, position="start", seed=0)
    planted = [p for p in out.pairs if "planted" in p.metadata]
    assert 170 <= out.planted == len(planted) <= 230  # about half of 399 preference pairs
    for before, after in zip(sample, out.pairs, strict=True):
        if "planted" in after.metadata:
            assert (
                after.chosen == plant_cue(before.chosen, CUE, "start") and after.rejected == before.rejected
            )
            assert after.chosen.startswith(CUE)
        else:
            assert after == before
    assert out.pairs[0] == sample[0]  # a tie is never planted: the attribute would predict nothing


def test_the_control_ties_are_each_planted_answer_with_and_without_the_attribute(sample):
    out = plant_attribute(sample, CUE, share=0.3, position="end", seed=1)
    assert len(out.control_ties) == out.planted
    originals = {p.source_id: p for p in sample}
    for tie in out.control_ties:
        assert (tie.label, tie.kind) == ("tie", CONTROL_KIND)
        assert tie.rejected == originals[tie.source_id].chosen
        assert tie.chosen == plant_cue(tie.rejected, CUE, "end") and tie.chosen.endswith(CUE)
    assert len({t.pair_id for t in out.control_ties}) == len(out.control_ties)


def test_the_choice_depends_on_the_pairs_and_the_seed_not_on_their_order(sample):
    once = {p.pair_id for p in plant_attribute(sample, CUE, share=0.5, seed=3).control_ties}
    again = {p.pair_id for p in plant_attribute(list(reversed(sample)), CUE, share=0.5, seed=3).control_ties}
    other = {p.pair_id for p in plant_attribute(sample, CUE, share=0.5, seed=4).control_ties}
    assert once == again and once != other
    everything = plant_attribute(sample, CUE, share=1.0)
    assert everything.planted == len(sample) - 1


def test_an_empty_attribute_or_a_share_out_of_range_is_refused():
    pair = PreferencePair("p", "a", "b", "s", "1")
    with pytest.raises(ValueError, match="empty"):
        plant_attribute([pair], "  ", share=0.5)
    with pytest.raises(ValueError, match="share"):
        plant_attribute([pair], CUE, share=0)
