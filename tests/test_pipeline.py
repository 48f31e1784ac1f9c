"""The pipeline's wiring, pure: each step reads the run before it, writes under the pipeline's root,
and a changed setting changes the fingerprints (so the run names) of its step and the steps after
it, no others. The steps themselves run in tests/test_submit.py."""

from pathlib import Path

from crome_ray.augment.job import run_name as augment_run_name
from crome_ray.config import load_config
from crome_ray.data.ingest import default_run_name as ingest_run_name
from crome_ray.pipeline.config import PipelineConfig
from crome_ray.pipeline.job import (
    augment_config,
    baseline_config,
    crome_config,
    evaluate_config,
    ingest_config,
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
    cfg = demo("evaluate.models=[baseline, crome, /models/public-rm]")
    ev = evaluate_config(cfg, {"baseline": "/r/train/b", "crome": "/r/train/c"})
    assert ev.models == ["/r/train/b", "/r/train/c", "/models/public-rm"]
    assert ev.labels == ["baseline", "crome", "public-rm"]
    assert ev.storage.root == "/data/runs"


def test_with_a_sweep_the_crome_step_is_a_tune_run_over_the_crome_training():
    cfg = demo("sweep.tie_weights=[0, 1]", "sweep.metric=eval_loss_bt", "sweep.mode=min")
    t = tune_config(cfg, "/data/runs/augment/a")
    assert t.train.train_data == "/data/runs/augment/a" and t.sweep.tie_weights == [0.0, 1.0]
    assert t.train.max_steps == cfg.crome.max_steps and t.storage.root == "/data/runs"
