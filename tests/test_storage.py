"""Run folders: committed by a marker written last; re-runs skip, conflicts refuse, crashes redo."""

import pytest

from crome_ray.storage import (
    COMMIT_MARKER,
    RunConflictError,
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


def test_a_folder_is_readable_only_after_commit(tmp_path):
    run = make_run(tmp_path)
    assert run.prepare("fp1")
    (tmp_path / "ingest" / "r1" / "pairs").mkdir()
    with pytest.raises(UncommittedRunError, match=f"not committed .*no {COMMIT_MARKER}.*crashed"):
        run.manifest()
    run.commit({"fingerprint": "fp1", "counts": {"n": 3}})
    assert run.is_committed() and run.manifest()["counts"] == {"n": 3}


def test_a_missing_folder_says_it_does_not_exist(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        make_run(tmp_path, "nope").manifest()


def test_rerunning_a_committed_step_with_the_same_config_is_a_no_op(tmp_path):
    run = make_run(tmp_path)
    run.prepare("fp1")
    (tmp_path / "ingest" / "r1" / "data.txt").write_text("kept")
    run.commit({"fingerprint": "fp1"})
    assert run.prepare("fp1") is False
    assert (tmp_path / "ingest" / "r1" / "data.txt").read_text() == "kept"


def test_a_committed_folder_from_another_config_is_refused_unless_forced(tmp_path):
    run = make_run(tmp_path)
    run.prepare("fp1")
    (tmp_path / "ingest" / "r1" / "data.txt").write_text("old")
    run.commit({"fingerprint": "fp1"})
    with pytest.raises(RunConflictError, match="fingerprint fp1, this one fp2"):
        run.prepare("fp2")
    assert run.prepare("fp2", force=True) is True
    assert not (tmp_path / "ingest" / "r1" / "data.txt").exists() and not run.is_committed()


def test_a_half_written_folder_from_a_crash_is_cleared_before_writing(tmp_path):
    run = make_run(tmp_path)
    run.prepare("fp1")
    (tmp_path / "ingest" / "r1" / "partial.parquet").write_text("half")  # crash: no commit
    assert run.prepare("fp1") is True
    assert list((tmp_path / "ingest" / "r1").iterdir()) == []


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
    with pytest.raises(StorageError, match="unsupported storage scheme 'gs'"):
        filesystem("gs://bucket/key")
