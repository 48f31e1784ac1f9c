"""Run folders: each attempt writes apart; the marker, written last, names the one that counts."""

import json

import pytest

from crome_ray.storage import (
    COMMIT_MARKER,
    RunFolder,
    StorageError,
    UncommittedRunError,
    split_uri,
)


def make_run(tmp_path, name="r1"):
    return RunFolder.at(str(tmp_path), "ingest", name)


def test_run_folder_layout_is_root_job_run_name(tmp_path):
    run = make_run(tmp_path)
    assert run.uri == f"{tmp_path}/ingest/r1"
    assert split_uri("s3://bucket/a/b") == ("s3", "bucket/a/b")


def test_an_attempt_is_readable_only_after_commit(tmp_path):
    run = make_run(tmp_path)
    attempt = run.new_attempt("fp1")
    (tmp_path / "ingest" / "r1" / "attempts" / attempt.uri.rsplit("/", 1)[1] / "pairs").mkdir()
    with pytest.raises(UncommittedRunError, match=f"not committed .*no {COMMIT_MARKER}.*crashed"):
        run.manifest()
    run.commit(attempt, {"fingerprint": "fp1", "counts": {"n": 3}})
    assert run.is_committed() and run.manifest()["counts"] == {"n": 3}
    assert run.committed() == attempt
    assert (
        json.loads((tmp_path / "ingest" / "r1" / COMMIT_MARKER).read_text())["attempt"]
        == attempt.path.rsplit("/", 1)[1]
    )


def test_a_missing_folder_says_it_does_not_exist(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        make_run(tmp_path, "nope").manifest()


def test_a_new_attempt_leaves_the_committed_one_readable_until_it_commits(tmp_path):
    run = make_run(tmp_path)
    old = run.new_attempt("fp1")
    (tmp_path / old.path / "data.txt").write_text("old")
    run.commit(old, {"fingerprint": "fp1"})
    new = run.new_attempt("fp2")
    (tmp_path / new.path / "data.txt").write_text("new")
    assert new != old
    assert (tmp_path / run.file("data.txt")).read_text() == "old"  # readers still see the old attempt
    run.commit(new, {"fingerprint": "fp2"})
    assert (tmp_path / run.file("data.txt")).read_text() == "new"
    assert run.attempt_ids() == [new.path.rsplit("/", 1)[1]]  # the old attempt is gone after the switch


def test_the_newest_uncommitted_attempt_of_the_same_config_is_the_one_to_resume(tmp_path):
    run = make_run(tmp_path)
    run.new_attempt("fp1")
    newer = run.new_attempt("fp1")
    run.new_attempt("fp2")
    assert run.resumable_attempt("fp1") == newer
    assert run.resumable_attempt("fp3") is None


def test_a_run_written_before_attempts_existed_is_still_read_and_cleared_on_the_next_commit(tmp_path):
    legacy = tmp_path / "ingest" / "r1"
    (legacy / "pairs").mkdir(parents=True)
    (legacy / "manifest.json").write_text(json.dumps({"fingerprint": "fp0", "counts": {"n": 1}}))
    (legacy / COMMIT_MARKER).write_text(json.dumps({"fingerprint": "fp0"}))
    run = make_run(tmp_path)
    assert run.manifest()["counts"] == {"n": 1} and run.file("pairs") == str(legacy / "pairs")
    attempt = run.new_attempt("fp1")
    run.commit(attempt, {"fingerprint": "fp1"})
    assert sorted(p.name for p in legacy.iterdir()) == [COMMIT_MARKER, "attempts"]


def test_uris_route_to_the_filesystem_of_their_scheme(monkeypatch):
    from huggingface_hub import HfFileSystem
    from s3fs import S3FileSystem

    from crome_ray.config import StorageConfig
    from crome_ray.storage import filesystem

    fs, path = filesystem("hf://datasets/HuggingFaceH4/ultrafeedback_binarized/data/train_prefs-*.parquet")
    assert isinstance(fs, HfFileSystem) and path.startswith("datasets/HuggingFaceH4/")
    fs, path = filesystem("s3://bucket/key", StorageConfig(endpoint_url="http://127.0.0.1:9"))
    assert isinstance(fs, S3FileSystem) and path == "bucket/key"
    assert fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:9"
    with pytest.raises(StorageError, match=r"unsupported storage scheme 'abfs' .* s3://, gs:// or hf://"):
        filesystem("abfs://container/key")
