"""The evaluation's score cache: a model's scores kept by what the model is now, so a re-run
scores only what that model has not scored; a changed model is a new identity."""

from __future__ import annotations

import os
import time

from crome_ray.evaluate.score_cache import ScoreCache, model_identity


def test_scores_written_are_read_back_by_key_and_only_the_asked_keys(tmp_path):
    cache = ScoreCache(str(tmp_path), "m1")
    assert cache.read(["a"]) == {}
    cache.write({"a": 1.0, "b": -2.5})
    cache.write({"c": 0.25})
    again = ScoreCache(str(tmp_path), "m1")  # another process
    assert again.read(["a", "c", "zzz"]) == {"a": 1.0, "c": 0.25}
    assert ScoreCache(str(tmp_path), "m2").read(["a"]) == {}  # another model's cache


def test_a_torn_part_is_skipped_and_the_rest_read(tmp_path):
    cache = ScoreCache(str(tmp_path), "m1")
    cache.write({"a": 1.0})
    (tmp_path / "score-cache" / "m1" / "part-torn.parquet").write_bytes(b"PAR1 torn by a crash")
    assert cache.read(["a"]) == {"a": 1.0}


def test_a_folder_models_identity_follows_its_files_and_the_truncation(tmp_path):
    model = tmp_path / "rm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    first = model_identity(str(model), None, 512)
    assert model_identity(str(model), None, 512) == first
    assert model_identity(str(model), None, 256) != first  # truncated differently: other scores
    later = time.time() + 5
    os.utime(model / "model.safetensors", (later, later))  # retrained in place
    assert model_identity(str(model), None, 512) != first
    assert model_identity("org/name", None, 512) == model_identity("org/name", None, 512)
    assert model_identity("org/name", None, 512) != model_identity("org/other", None, 512)


def test_a_committed_runs_identity_is_its_commit_and_a_new_attempt_is_another(tmp_path, samples):
    from crome_ray.config import load_config
    from crome_ray.data.config import IngestConfig
    from crome_ray.data.ingest import run_ingest

    source = samples / "ultrafeedback" / "eval_200.jsonl"
    cfg = load_config(
        IngestConfig, None, [f"storage.root={tmp_path}", f"source.path={source}", "source.limit=5"]
    )
    run = run_ingest(cfg).run  # any committed run stands in for a training run here
    first = model_identity(run.uri, None, 512)
    assert model_identity(run.uri, None, 512) == first
    run_ingest(cfg, force=True)  # the same config again, as a new attempt (a retrain)
    assert model_identity(run.uri, None, 512) != first


def test_a_new_version_of_the_scoring_code_is_a_new_identity(monkeypatch):
    from crome_ray.evaluate import score_cache

    before = model_identity("org/name", None, 512)
    monkeypatch.setattr(score_cache, "SCORER_VERSION", score_cache.SCORER_VERSION + 1)
    assert model_identity("org/name", None, 512) != before
