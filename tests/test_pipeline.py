"""The pipeline's wiring, pure: each step reads the run before it, writes under the pipeline's root,
and a changed setting changes the fingerprints (so the run names) of its step and the steps after
it, no others. The steps themselves run in tests/test_submit.py."""

from pathlib import Path

import pytest

from crome_ray.augment.job import run_name as augment_run_name
from crome_ray.config import load_config
from crome_ray.data.ingest import default_run_name as ingest_run_name
from crome_ray.pipeline.config import PipelineConfig
from crome_ray.pipeline.job import (
    PipelineError,
    augment_config,
    baseline_config,
    control_config,
    crome_config,
    evaluate_config,
    ingest_config,
    plant_config,
    planted_position,
    steps_of,
    tune_config,
)
from crome_ray.train.job import default_run_name

DEMO = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "pipeline_demo.yaml"


def demo(*overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, DEMO, ["storage.root=/data/runs", *overrides])


def fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """Each step's fingerprint, with the upstream runs named as the pipeline would name them."""
    ingest = ingest_config(cfg)
    ingest_uri = f"/data/runs/ingest/{ingest_run_name(ingest)}"
    base = baseline_config(cfg, ingest_uri)
    base_uri = f"/data/runs/train/{default_run_name(base)}"
    aug = augment_config(cfg, ingest_uri, base_uri)
    aug_uri = f"/data/runs/augment/{augment_run_name(aug)}"
    crome = crome_config(cfg, aug_uri)
    crome_uri = f"/data/runs/train/{default_run_name(crome)}"
    ev = evaluate_config(cfg, {"baseline": base_uri, "crome": crome_uri})
    return {"ingest": ingest.fingerprint(), "baseline": base.fingerprint(), "augment": aug.fingerprint(),
            "crome": crome.fingerprint(), "evaluate": ev.fingerprint()}  # fmt: skip


def changed(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [k for k in a if a[k] != b[k]]


def test_each_step_reads_the_run_before_it_and_writes_under_the_pipelines_root():
    cfg = demo("baseline_filter=true")
    assert ingest_config(cfg).source == cfg.source
    base = baseline_config(cfg, "/data/runs/ingest/x")
    aug = augment_config(cfg, "/data/runs/ingest/x", "/data/runs/train/b")
    crome = crome_config(cfg, "/data/runs/augment/a")
    assert base.train_data == "/data/runs/ingest/x" and aug.input == "/data/runs/ingest/x"
    assert aug.filter.model == "/data/runs/train/b"  # the baseline filters the augmentation
    assert crome.train_data == "/data/runs/augment/a"
    for step in (ingest_config(cfg), base, aug, crome):
        assert step.storage.root == "/data/runs"
    assert crome.max_steps == cfg.crome.max_steps and base.model == cfg.baseline.model  # their own configs
    assert augment_config(demo(), "/i", "/b").filter.model is None  # the demo's filter is off


def test_a_changed_setting_changes_its_step_and_the_steps_after_it_no_others():
    base = fingerprints(demo())
    assert changed(base, fingerprints(demo())) == []  # the same pipeline: every run found again
    assert changed(base, fingerprints(demo("evaluate.limit=5"))) == ["evaluate"]
    assert changed(base, fingerprints(demo("crome.max_steps=21"))) == ["crome", "evaluate"]
    assert changed(base, fingerprints(demo("augment.oracle_examples=9"))) == ["augment", "crome", "evaluate"]
    # a new baseline is a new filter model (when the filter is on) and a new evaluated model
    filtered = fingerprints(demo("baseline_filter=true"))
    assert changed(filtered, fingerprints(demo("baseline_filter=true", "baseline.max_steps=21"))) == [
        "baseline",
        "augment",
        "crome",
        "evaluate",
    ]
    assert changed(base, fingerprints(demo("source.limit=301"))) == list(base)


def test_the_evaluation_scores_the_pipelines_models_under_their_names_and_others_as_given():
    cfg = demo("evaluate.models=[baseline, crome, /models/public-rm]", "selfcheck=null")
    ev = evaluate_config(cfg, {"baseline": "/r/train/b", "crome": "/r/train/c"})
    assert ev.models == ["/r/train/b", "/r/train/c", "/models/public-rm"]
    assert ev.labels == ["baseline", "crome", "public-rm"]
    assert ev.storage.root == "/data/runs"


def test_with_a_sweep_the_crome_step_is_a_tune_run_over_the_crome_training():
    cfg = demo("sweep.tie_weights=[0, 1]", "sweep.metric=eval_loss_bt", "sweep.mode=min")
    t = tune_config(cfg, "/data/runs/augment/a")
    assert t.train.train_data == "/data/runs/augment/a" and t.sweep.tie_weights == [0.0, 1.0]
    assert t.train.max_steps == cfg.crome.max_steps and t.storage.root == "/data/runs"


def test_the_selfcheck_plants_the_ingested_pairs_and_its_control_trains_as_crome_does_on_the_exact_ties():
    cfg = demo("selfcheck.share=0.4", "selfcheck.seed=2", "crome.loss.tie_weight=3")
    planted = plant_config(cfg, "/data/runs/ingest/x", "start", control=False)
    control_data = plant_config(cfg, "/data/runs/ingest/x", "start", control=True)
    assert (planted.input, planted.share, planted.seed, planted.position) == (
        "/data/runs/ingest/x",
        0.4,
        2,
        "start",
    )
    assert planted.attribute == cfg.selfcheck.attribute and not planted.control and control_data.control
    assert planted.fingerprint() != control_data.fingerprint()  # two runs: the pairs, the pairs and ties
    control = control_config(cfg, "/data/runs/plant/c", tie_weight=3.0)
    crome = crome_config(cfg, "/data/runs/augment/a")
    assert control.train_data == "/data/runs/plant/c" and control.loss.tie_weight == 3.0
    assert control.model_copy(update={"train_data": crome.train_data}) == crome  # the same trainer
    # with a sweep, the control takes the λ the sweep chose
    assert control_config(cfg, "/data/runs/plant/c", tie_weight=0.3).loss.tie_weight == 0.3


def test_the_selfchecks_evaluation_adds_the_control_and_probes_with_the_planted_attribute():
    cfg = demo("selfcheck.attribute=Great question!", "evaluate.cue.enabled=false")
    ours = {"baseline": "/r/train/b", "crome": "/r/train/c", "control": "/r/train/k"}
    ev = evaluate_config(cfg, ours, "end")
    assert ev.models == ["/r/train/b", "/r/train/c", "/r/train/k"]
    assert ev.labels == ["baseline", "crome", "control"]
    assert (ev.cue.enabled, ev.cue.text, ev.cue.position) == (True, "Great question!", "end")
    plain = evaluate_config(demo("selfcheck=null"), ours)
    assert plain.models == ["/r/train/b", "/r/train/c"] and plain.cue.text == cfg.evaluate.cue.text


def test_the_selfcheck_leaves_the_pipelines_identity_alone_when_it_is_off():
    off = demo("selfcheck=null")
    assert "selfcheck" not in off.model_dump(mode="json", exclude={"selfcheck"})
    assert off.fingerprint() != demo("selfcheck.share=0.5").fingerprint()
    assert steps_of(off) == ("ingest", "baseline", "augment", "crome", "evaluate")
    assert steps_of(demo("selfcheck.share=0.5")) == (
        "ingest", "plant", "baseline", "augment", "crome", "control", "evaluate")  # fmt: skip


def test_auto_puts_the_attribute_where_the_models_truncation_keeps_it(tiny_bert, tiny_llama):
    assert planted_position(demo("selfcheck.position=auto", f"baseline.model={tiny_bert}",
                                 f"crome.model={tiny_bert}")) == "start"  # fmt: skip
    assert planted_position(demo("selfcheck.position=auto", f"baseline.model={tiny_llama}",
                                 f"crome.model={tiny_llama}")) == "end"  # fmt: skip
    assert planted_position(demo("selfcheck.position=end")) == "end"
    with pytest.raises(PipelineError, match="different ends"):
        planted_position(
            demo("selfcheck.position=auto", f"baseline.model={tiny_bert}", f"crome.model={tiny_llama}")
        )


def test_the_selfchecks_sweep_judges_lambda_on_the_planted_attribute_where_it_was_planted():
    cfg = demo("selfcheck.attribute=Great question!", "sweep.tie_weights=[0, 1]")
    t = tune_config(cfg, "/data/runs/augment/a", "start")
    assert (t.train.probe.cue, t.train.probe.position) == ("Great question!", "start")
    plain = tune_config(demo("selfcheck=null", "sweep.tie_weights=[0, 1]"), "/data/runs/augment/a")
    assert (plain.train.probe.cue, plain.train.probe.position) == (cfg.evaluate.cue.text, "auto")


def test_with_seeds_each_rm_trains_first_at_the_first_seed_and_the_evaluation_finds_the_others():
    cfg = demo("seeds=[3, 4]")
    assert baseline_config(cfg, "/i").seed == 3 and crome_config(cfg, "/a").seed == 3
    assert control_config(cfg, "/p", tie_weight=1.0).seed == 3
    assert evaluate_config(cfg, {"baseline": "/b", "crome": "/c", "control": "/k"}, "start").seeds == [3, 4]
    # seeds from the RMs' own seed on: only the evaluation (which adds the other seeds) is new
    assert changed(fingerprints(demo()), fingerprints(demo("seeds=[0, 1]"))) == ["evaluate"]
    assert demo("seeds=[0, 1]").fingerprint() != demo().fingerprint()
    assert evaluate_config(demo(), {"baseline": "/b", "crome": "/c"}).seeds is None
    with pytest.raises(ValueError, match="each seed once"):
        demo("seeds=[1, 1]")
