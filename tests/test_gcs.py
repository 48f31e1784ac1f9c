"""gs:// storage against gcp-storage-emulator: the GCS JSON API over HTTP on 127.0.0.1,
reached through gcsfs as on Google Cloud Storage (only the credentials differ). What GCS shares
with S3 is in tests/test_buckets.py."""

import json

import pyarrow as pa
import pytest

from crome_ray.config import load_config
from crome_ray.storage import (
    COMMIT_MARKER,
    PartWriter,
    RunFolder,
    StorageConfig,
    StorageError,
    UncommittedRunError,
    check_root,
    describe_bucket_failure,
    filesystem,
    iter_files,
    path_in_filesystem,
    pyarrow_filesystem,
)

SCHEMA = pa.schema([("pair_id", pa.string()), ("n", pa.int64())])


def write_attempt(run, fingerprint, rows):
    attempt = run.new_attempt(fingerprint)
    writer = PartWriter(attempt, "pairs", SCHEMA, rows_per_file=2)
    for i in range(rows):
        writer.add({"pair_id": f"p{i}", "n": i})
    return attempt, writer.close()


def test_a_run_folder_on_gcs_is_read_only_through_its_commit_marker(gcs):
    bucket = gcs.new_bucket()
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    run = RunFolder.at(f"gs://{bucket}/crome", "ingest", "r1", storage)
    first, parts = write_attempt(run, "fp1", rows=5)
    assert parts == ["pairs/part-00000.parquet", "pairs/part-00001.parquet", "pairs/part-00002.parquet"]
    assert not run.is_committed()
    with pytest.raises(UncommittedRunError, match=f"not committed .*no {COMMIT_MARKER}"):
        run.read_table("pairs")

    run.commit(first, {"fingerprint": "fp1", "counts": {"pairs": 5}})
    fresh = RunFolder.from_uri(f"gs://{bucket}/crome/ingest/r1", storage)  # another process
    assert fresh.is_committed() and fresh.manifest()["counts"] == {"pairs": 5}
    assert fresh.read_table("pairs").column("n").to_pylist() == [0, 1, 2, 3, 4]
    first_id = first.uri.rsplit("/", 1)[1]
    marker = json.loads(gcs.objects(bucket, "crome/ingest/r1/")[f"crome/ingest/r1/{COMMIT_MARKER}"])
    assert marker["attempt"] == first_id and marker["fingerprint"] == "fp1"

    second, _ = write_attempt(run, "fp2", rows=1)
    assert fresh.read_table("pairs").num_rows == 5  # readers see the committed attempt until the switch
    run.commit(second, {"fingerprint": "fp2", "counts": {"pairs": 1}})
    fresh = RunFolder.from_uri(f"gs://{bucket}/crome/ingest/r1", storage)
    assert fresh.read_table("pairs").column("pair_id").to_pylist() == ["p0"]
    second_id = second.uri.rsplit("/", 1)[1]
    assert sorted(gcs.objects(bucket, "crome/ingest/r1/")) == [  # the old attempt is gone
        f"crome/ingest/r1/{COMMIT_MARKER}",
        f"crome/ingest/r1/attempts/{second_id}/_ATTEMPT.json",
        f"crome/ingest/r1/attempts/{second_id}/manifest.json",
        f"crome/ingest/r1/attempts/{second_id}/pairs/part-00000.parquet",
    ]


def test_iter_files_names_gcs_uris_for_a_folder_a_glob_and_a_file(gcs):
    bucket = gcs.new_bucket()
    fs = gcs.fs()
    for key in ("in/a.jsonl", "in/sub/b.jsonl", "in/notes.txt", "other/c.jsonl"):
        fs.pipe_file(f"{bucket}/{key}", b"{}\n")
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    assert list(iter_files(f"gs://{bucket}/in", storage, (".jsonl",))) == [
        f"gs://{bucket}/in/a.jsonl",
        f"gs://{bucket}/in/sub/b.jsonl",
    ]
    assert list(iter_files(f"gs://{bucket}/*/*.jsonl", storage, (".jsonl",))) == [
        f"gs://{bucket}/in/a.jsonl",
        f"gs://{bucket}/other/c.jsonl",
    ]
    assert list(iter_files(f"gcs://{bucket}/in/notes.txt", storage, (".jsonl",))) == [
        f"gcs://{bucket}/in/notes.txt"  # the scheme given is the scheme returned
    ]
    with pytest.raises(StorageError, match=r"no input files at 'gs://.*/nothing'"):
        list(iter_files(f"gs://{bucket}/nothing", storage, (".jsonl",)))


def test_ray_train_checkpoints_persist_to_gcs_through_the_pyarrow_filesystem(gcs, tmp_path):
    """Ray Train's own storage code (the validation marker, a checkpoint's upload and download)
    on the filesystem that crome_ray.train.job hands it as RunConfig.storage_filesystem."""
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.storage import StorageContext

    bucket = gcs.new_bucket()
    uri = f"gs://{bucket}/crome/train/rm/attempts/a1"
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    context = StorageContext(path_in_filesystem(uri), "ray", pyarrow_filesystem(uri, storage))
    local = tmp_path / "checkpoint"
    (local / "adapter").mkdir(parents=True)
    (local / "adapter" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    (local / "state.json").write_text('{"step": 5}')
    persisted = context.persist_current_checkpoint(Checkpoint.from_directory(str(local)), "checkpoint_000000")
    assert sorted(gcs.objects(bucket, "crome/train/rm/attempts/a1/ray/checkpoint_000000/")) == [
        "crome/train/rm/attempts/a1/ray/checkpoint_000000/adapter/weights.bin",
        "crome/train/rm/attempts/a1/ray/checkpoint_000000/state.json",
    ]
    back = persisted.to_directory(str(tmp_path / "restored"))
    assert (tmp_path / "restored" / "adapter" / "weights.bin").read_bytes() == bytes(range(256)) * 10
    assert json.loads((tmp_path / "restored" / "state.json").read_text()) == {"step": 5} and back


def test_a_gcs_model_folder_is_copied_once_and_again_only_when_it_changes(gcs, tmp_path):
    from crome_ray.models import COMPLETE, resolve_model

    bucket = gcs.new_bucket()
    fs = gcs.fs()
    fs.pipe_file(f"{bucket}/models/rm/config.json", b'{"model_type": "llama", "v": 1}')
    fs.pipe_file(f"{bucket}/models/rm/sub/tokenizer.json", b"{}")
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    path = resolve_model(f"gs://{bucket}/models/rm", cache=str(tmp_path), storage=storage)
    assert json.loads((path / "config.json").read_text())["v"] == 1
    assert (path / "sub" / "tokenizer.json").exists() and (path / COMPLETE).exists()
    copied_at = (path / "config.json").stat().st_mtime_ns
    assert resolve_model(f"gs://{bucket}/models/rm/", cache=str(tmp_path), storage=storage) == path
    assert (path / "config.json").stat().st_mtime_ns == copied_at  # served from the cache
    fs.pipe_file(f"{bucket}/models/rm/config.json", b'{"model_type": "llama", "v": 2}')  # same size
    again = resolve_model(f"gs://{bucket}/models/rm", cache=str(tmp_path), storage=storage)
    assert again != path and json.loads((again / "config.json").read_text())["v"] == 2  # rewritten: fetched


def test_a_committed_training_run_on_gcs_is_a_model_to_scoring_evaluation_and_the_filter(gcs):
    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import baseline_run
    from crome_ray.evaluate.config import EvaluateConfig
    from crome_ray.evaluate.job import model_runs
    from crome_ray.train.score import model_folder

    bucket = gcs.new_bucket()
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    uri = f"gs://{bucket}/crome/train/rm-baseline"
    run = RunFolder.from_uri(uri, storage)
    attempt = run.new_attempt("fp1")
    attempt.fs.pipe_file(attempt.file("model", "config.json"), b"{}")
    ep = f"storage.endpoint_url={gcs.endpoint}"
    evaluate = load_config(EvaluateConfig, None, [f"models=[{uri}]", ep])
    augment = load_config(AugmentConfig, None, [f"filter.model={uri}", ep])
    assert model_runs(evaluate, ["rm"]) == {} and baseline_run(augment) == {}  # not committed: not a run
    run.commit(attempt, {"fingerprint": "fp1"})
    assert model_folder(uri, storage) == f"{attempt.uri}/model"  # the committed attempt's export
    assert model_runs(evaluate, ["rm"])["model:rm"].uri == uri
    assert baseline_run(augment)["baseline"].uri == uri


def test_the_root_check_names_a_missing_bucket_and_the_endpoint(gcs):
    storage = StorageConfig(endpoint_url=gcs.endpoint)
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:"):
        check_root("gs://no-such-bucket/crome", storage)


def test_an_empty_bucket_passes_the_check(gcs):
    check_root(f"gs://{gcs.new_bucket()}/crome", StorageConfig(endpoint_url=gcs.endpoint))


def test_a_credentials_variable_naming_no_file_fails_before_any_request(gcs, tmp_path, monkeypatch):
    """Without the check gcsfs would go on anonymously and fail later with a 401."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    with pytest.raises(StorageError, match=r"GOOGLE_APPLICATION_CREDENTIALS names .*key\.json.* not a file"):
        check_root("gs://bucket/crome")


def gcs_refusal(message: str) -> Exception:
    """What gcsfs raises for a 401 from GCS (its own response check turns the body into it)."""
    from gcsfs.retry import validate_response

    body = json.dumps({"error": {"code": 401, "message": message, "errors": [{"reason": "required"}]}})
    with pytest.raises(Exception) as refused:
        validate_response(401, body.encode(), "b/private/o")
    return refused.value


def test_an_anonymous_request_refused_by_gcs_says_how_to_give_credentials():
    """GCS's answer when no credentials were found (gcsfs then goes on anonymously)."""
    anonymous = gcs_refusal(
        "Anonymous caller does not have storage.objects.list access to the Google Cloud Storage "
        "bucket. Permission 'storage.objects.list' denied on resource (or it may not exist)."
    )
    message = describe_bucket_failure("gs://private/crome", anonymous, StorageConfig())
    assert "no Google Cloud credentials found for 'gs://private/crome'" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "service account" in message
    refused = describe_bucket_failure("gs://private/crome", gcs_refusal("Invalid Credentials"), None)
    assert refused.startswith("the Google Cloud credentials were refused for 'gs://private/crome'")


def test_an_emulator_endpoint_gets_gcsfs_json_api_filesystem_without_credentials(gcs, monkeypatch):
    """From storage.endpoint_url or STORAGE_EMULATOR_HOST. Not gcsfs's default class, which first
    asks each bucket's layout over gRPC: an emulator has no gRPC, and every call waits out 60 s."""
    from gcsfs.core import GCSFileSystem
    from gcsfs.extended_gcsfs import ExtendedGcsFileSystem

    configured = [StorageConfig(endpoint_url=gcs.endpoint)] * 2
    for scheme, storage in zip(("gs", "gcs"), configured, strict=True):
        fs, path = filesystem(f"{scheme}://bucket/a/key", storage)
        assert isinstance(fs, GCSFileSystem) and not isinstance(fs, ExtendedGcsFileSystem)
        assert path == "bucket/a/key" == path_in_filesystem(f"{scheme}://bucket/a/key")
        assert fs._location == gcs.endpoint and fs.credentials.method == "anon"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint.removeprefix("http://"))
    fs, _ = filesystem("gs://bucket/a/key")
    assert not isinstance(fs, ExtendedGcsFileSystem) and fs._location == gcs.endpoint
    assert fs.credentials.method == "anon"
