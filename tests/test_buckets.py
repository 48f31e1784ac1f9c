"""Run folders, sources, the oracle's cache and ledger in a bucket: the same behaviour on S3 (moto's
server) and Google Cloud Storage (gcp-storage-emulator), each speaking its real HTTP protocol on
127.0.0.1. What only one of them has is in tests/test_s3.py and tests/test_gcs.py."""

import pytest

from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.storage import RunFolder, StorageConfig, StorageError, UncommittedRunError, filesystem
from tests.conftest import ingest_dies_at_pair


def ingest_cfg(store, root, *overrides, source=None):
    extra = [f"source.path={source}"] if source else []
    return load_config(
        IngestConfig,
        None,
        [f"storage.root={root}", f"storage.endpoint_url={store.endpoint}", *extra, *overrides],
    )


@pytest.fixture()
def ingested(bucket_store, samples):
    bucket = bucket_store.new_bucket()
    root = f"{bucket_store.scheme}://{bucket}/crome"
    result = run_ingest(
        ingest_cfg(bucket_store, root, "run_name=uf", source=samples / "ultrafeedback" / "eval_200.jsonl")
    )
    return bucket, result


def test_an_ingest_from_a_bucket_to_a_bucket_commits_a_run_that_reads_back(bucket_store, samples):
    s, bucket = bucket_store, bucket_store.new_bucket()
    s.put(samples / "ultrafeedback" / "eval_200.jsonl", bucket, "in/uf.jsonl")
    cfg = ingest_cfg(
        s, f"{s.scheme}://{bucket}/out", "run_name=uf", source=f"{s.scheme}://{bucket}/in/uf.jsonl"
    )
    result = run_ingest(cfg)
    assert result.run.uri == f"{s.scheme}://{bucket}/out/ingest/uf"
    attempt = f"out/ingest/uf/attempts/{result.manifest['attempt']}"
    assert sorted(s.objects(bucket, "out/")) == [
        "out/ingest/uf/_COMMITTED",
        f"{attempt}/_ATTEMPT.json",
        f"{attempt}/manifest.json",
        f"{attempt}/pairs/part-00000.parquet",
        f"{attempt}/quarantine/part-00000.parquet",
    ]
    run = RunFolder.from_uri(result.run.uri, cfg.storage)  # another reader, from the URI alone
    assert run.manifest()["counts"] == result.counts
    assert run.read_table("pairs").num_rows == result.counts["pairs_written"] > 150
    assert run_ingest(cfg).skipped  # committed with the same config: nothing is redone


def test_a_bucket_source_and_root_found_through_the_endpoint_variable_alone(
    bucket_store, samples, monkeypatch
):
    s, bucket = bucket_store, bucket_store.new_bucket()
    s.put(samples / "eval" / "llmbar_natural" / "dataset.json", bucket, "in/llmbar.json")
    monkeypatch.setenv(*s.endpoint_variable())  # what the SDK, pyarrow and Ray read: no config needed
    cfg = load_config(
        IngestConfig,
        None,
        [f"source.path={s.scheme}://{bucket}/in/llmbar.json", "source.format=llmbar",
         f"storage.root={s.scheme}://{bucket}/out"],
    )  # fmt: skip
    result = run_ingest(cfg)
    assert result.counts["pairs_written"] == 100
    assert result.run.uri.startswith(f"{s.scheme}://{bucket}/out/ingest/")


def test_an_uncommitted_run_in_a_bucket_is_refused(bucket_store, ingested):
    bucket, result = ingested
    bucket_store.remove(bucket, "crome/ingest/uf/_COMMITTED")  # as if it crashed before the switch
    run = RunFolder.from_uri(result.run.uri, StorageConfig(endpoint_url=bucket_store.endpoint))
    assert not run.is_committed()
    with pytest.raises(UncommittedRunError, match="not committed"):
        run.read_table("pairs")


def test_a_forced_ingest_that_dies_part_way_leaves_the_committed_run_byte_identical(
    bucket_store, ingested, samples, monkeypatch
):
    """A bucket has no atomic rename: the marker, one PUT, is the switch."""
    s, (bucket, first) = bucket_store, ingested
    before = s.objects(bucket, "crome/ingest/uf/")
    ingest_dies_at_pair(monkeypatch, 30)
    cfg = ingest_cfg(s, f"{s.scheme}://{bucket}/crome", "run_name=uf", "source.ties=keep", "rows_per_file=10",
                     source=samples / "ultrafeedback" / "eval_200.jsonl")  # fmt: skip
    with pytest.raises(ConnectionError):
        run_ingest(cfg, force=True)
    after = s.objects(bucket, "crome/ingest/uf/")
    assert {k: v for k, v in after.items() if k in before} == before  # every old byte as it was
    assert len(after) > len(before)  # the dead attempt wrote parts, in a folder of its own
    run = RunFolder.from_uri(first.run.uri, StorageConfig(endpoint_url=s.endpoint))
    assert run.manifest() == first.manifest
    assert run.read_table("pairs").num_rows == first.counts["pairs_written"]


def test_a_missing_bucket_fails_fast_naming_the_bucket_and_the_endpoint(bucket_store, samples):
    s = bucket_store
    cfg = ingest_cfg(
        s, f"{s.scheme}://no-such-bucket/crome", source=samples / "ultrafeedback" / "eval_200.jsonl"
    )
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:"):
        run_ingest(cfg)  # before any work
    cfg = ingest_cfg(s, f"{s.scheme}://{s.new_bucket()}/out", source=f"{s.scheme}://missing-input/uf.jsonl")
    with pytest.raises(StorageError, match="bucket 'missing-input' does not exist"):
        run_ingest(cfg)


def test_the_oracle_cache_and_ledger_live_in_a_bucket_too(bucket_store):
    from crome_ray.oracle.cache import LedgerStore, ResponseCache
    from crome_ray.oracle.protocol import OracleResult, Usage

    root = f"{bucket_store.scheme}://{bucket_store.new_bucket()}"
    storage = StorageConfig(endpoint_url=bucket_store.endpoint)
    cache = ResponseCache(f"{root}/cache", "gemini", "gemini-2.5-flash", storage)
    locations = [
        cache.append(
            OracleResult(
                key=f"k{i}", text=f'{{"v": {i}}}', parsed={"v": i}, usage=Usage(10, 5), cost_usd=0.001,
                latency_s=0.1, backend="gemini", model="gemini-2.5-flash",
            )
        )
        for i in range(3)
    ]  # fmt: skip
    assert cache.read(locations[1]).parsed == {"v": 1}
    fresh = ResponseCache(f"{root}/cache", "gemini", "gemini-2.5-flash", storage)  # another process
    assert sorted(key for key, _, _ in fresh.scan()) == ["k0", "k1", "k2"]
    ledger = LedgerStore(f"{root}/runs/oracle/r.ledger.json", storage)
    assert ledger.load() is None
    ledger.save({"allocated": 0.25, "spent": 0.2})
    assert LedgerStore(f"{root}/runs/oracle/r.ledger.json", storage).load()["allocated"] == 0.25


def test_pair_files_are_bucket_uris_that_the_pyarrow_filesystem_reads(bucket_store, ingested):
    import pyarrow.parquet as pq

    from crome_ray.data.inputs import pair_files
    from crome_ray.storage import path_in_filesystem, pyarrow_filesystem

    bucket, result = ingested
    storage = StorageConfig(endpoint_url=bucket_store.endpoint)
    files = pair_files(RunFolder.from_uri(result.run.uri, storage))
    assert files and all(
        f.startswith(f"{bucket_store.scheme}://{bucket}/crome/ingest/uf/attempts/") for f in files
    )
    table = pq.ParquetDataset(
        [path_in_filesystem(f) for f in files], filesystem=pyarrow_filesystem(files[0], storage)
    ).read()  # how the train dataset and the augmentation read them (Ray Data takes the same pair)
    assert table.num_rows == result.counts["pairs_written"]


@pytest.mark.ray
def test_ray_data_reads_and_writes_bucket_parquet_through_the_pyarrow_filesystem(
    bucket_store, ingested, ray_cluster
):
    import ray
    from ray.data.expressions import col

    from crome_ray.data.inputs import pair_files
    from crome_ray.storage import path_in_filesystem, pyarrow_filesystem

    bucket, result = ingested
    storage = StorageConfig(endpoint_url=bucket_store.endpoint)
    files = pair_files(RunFolder.from_uri(result.run.uri, storage))
    pafs = pyarrow_filesystem(files[0], storage)  # pickled to the workers, endpoint and all
    ds = ray.data.read_parquet([path_in_filesystem(f) for f in files], filesystem=pafs)
    assert ds.count() == result.counts["pairs_written"]
    rows = ds.filter(expr=col("label") == "chosen").take(3)
    assert len(rows) == 3 and all(r["prompt"] and r["pair_id"] for r in rows)
    ds.filter(expr=col("label") == "chosen").write_parquet(f"{bucket}/copy", filesystem=pafs)
    written = [f"{bucket}/{k}" for k in bucket_store.objects(bucket, "copy/") if k.endswith(".parquet")]
    back = ray.data.read_parquet(written, filesystem=pafs).to_pandas()
    assert 0 < len(back) <= ds.count() and set(back["label"]) == {"chosen"}


def test_the_score_cache_lives_in_a_bucket_too(bucket_store):
    from crome_ray.evaluate.score_cache import ScoreCache, model_identity

    root = f"{bucket_store.scheme}://{bucket_store.new_bucket()}"
    storage = StorageConfig(endpoint_url=bucket_store.endpoint)
    folder = f"{root}/models/rm"
    filesystem(folder, storage)[0].pipe_file(f"{filesystem(folder, storage)[1]}/config.json", b"{}")
    identity = model_identity(folder, storage, 512)
    ScoreCache(root, identity, storage).write({"k1": 0.5, "k2": -1.25})
    assert ScoreCache(root, identity, storage).read(["k1", "k2", "k3"]) == {"k1": 0.5, "k2": -1.25}
    # the folder's files changed: another identity, nothing cached for it
    filesystem(folder, storage)[0].pipe_file(f"{filesystem(folder, storage)[1]}/config.json", b'{"x": 1}')
    assert model_identity(folder, storage, 512) != identity
