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


def test_the_planting_step_commits_the_planted_pairs_and_for_the_control_the_exact_ties_too(
    tmp_path, samples
):
    from crome_ray.config import StorageConfig
    from crome_ray.data.config import PlantConfig
    from crome_ray.data.planting import run_plant_job
    from crome_ray.records import PreferencePair

    storage = StorageConfig(root=str(tmp_path / "runs"))
    source = tmp_path / "uf.jsonl"
    source.write_text("\n".join((samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()[:60]))
    cfg = PlantConfig(input=str(source), attribute=CUE, share=0.5, position="start", seed=0, storage=storage)
    planted = run_plant_job(cfg, log=lambda _: None)
    rows = [PreferencePair.from_row(r) for r in planted.run.read_table("pairs").to_pylist()]
    ingested = planted.manifest["inputs"]["pairs"]["uri"]
    assert planted.counts["pairs_in"] == len(rows) and "/ingest/" in ingested  # the source ingested first
    with_it = [p for p in rows if p.chosen.startswith(CUE)]
    assert len(with_it) == planted.counts["planted"] and 15 <= len(with_it) <= 45
    assert all(p.metadata["planted"] == CUE and not p.rejected.startswith(CUE) for p in with_it)
    assert {p.kind for p in rows} == {"original"}
    control = run_plant_job(cfg.model_copy(update={"control": True}), log=lambda _: None)
    both = [PreferencePair.from_row(r) for r in control.run.read_table("pairs").to_pylist()]
    ties = [p for p in both if p.kind == CONTROL_KIND]
    assert [p for p in both if p.kind != CONTROL_KIND] == rows  # the same planted pairs
    assert len(ties) == len(with_it) and {t.chosen for t in ties} == {p.chosen for p in with_it}
    assert all(t.label == "tie" and t.chosen == plant_cue(t.rejected, CUE, "start") for t in ties)
    again = run_plant_job(cfg, log=lambda _: None)
    assert again.skipped and again.run.uri == planted.run.uri


def test_pairs_with_nothing_to_plant_are_refused_with_the_reason(tmp_path):
    from crome_ray.config import StorageConfig
    from crome_ray.data.config import PlantConfig
    from crome_ray.data.planting import PlantError, run_plant_job

    ties = tmp_path / "ties.jsonl"
    ties.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "label": "tie"}) + "\n")
    cfg = PlantConfig(input=str(ties), attribute=CUE, storage=StorageConfig(root=str(tmp_path / "runs")))
    with pytest.raises(PlantError, match="0 of them preference pairs"):
        run_plant_job(cfg, log=lambda _: None)
