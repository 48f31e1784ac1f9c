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


def test_a_table_streams_to_its_part_files_in_row_groups_and_holds_no_more_than_one(tmp_path):
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    from crome_ray.storage import ROW_GROUP_ROWS, PartWriter

    schema = pa.schema([("n", pa.int64()), ("text", pa.string())])
    attempt = make_run(tmp_path).new_attempt("fp1")
    writer = PartWriter(attempt, "pairs", schema, rows_per_file=8000)
    text = "x" * 2000
    for i in range(ROW_GROUP_ROWS):  # the first row group: pyarrow's lazy imports are not rows
        writer.add({"n": i, "text": text + str(i)})
    tracemalloc.start()
    for i in range(ROW_GROUP_ROWS, 20_000):  # 40 MB of text: a writer keeping its rows holds it all
        writer.add({"n": i, "text": text + str(i)})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    files = writer.close()
    assert peak < 10 * 2**20, f"the writer held {peak / 2**20:.1f} MiB of rows"
    assert files == [f"pairs/part-{i:05d}.parquet" for i in range(3)] and writer.rows == 20_000
    metas = [pq.ParquetFile(f"{attempt.path}/{f}").metadata for f in files]
    assert [m.num_rows for m in metas] == [8000, 8000, 4000]
    groups = [m.row_group(g).num_rows for m in metas for g in range(m.num_row_groups)]
    assert max(groups) == ROW_GROUP_ROWS and sum(groups) == 20_000
    back = pq.read_table(f"{attempt.path}/pairs", schema=schema)
    assert back.column("n").to_pylist() == list(range(20_000))
    assert back.column("text")[7].as_py() == text + "7"


def test_an_empty_table_still_gets_one_file_with_its_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crome_ray.storage import PartWriter

    schema = pa.schema([("n", pa.int64())])
    attempt = make_run(tmp_path).new_attempt("fp1")
    writer = PartWriter(attempt, "stats", schema, rows_per_file=10)
    assert writer.close() == ["stats/part-00000.parquet"] and writer.rows == 0
    table = pq.read_table(f"{attempt.path}/stats/part-00000.parquet")
    assert table.num_rows == 0 and table.schema.equals(schema)
