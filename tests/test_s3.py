"""Ingest to and from s3:// against moto's S3 server (the real HTTP protocol on 127.0.0.1)."""

import pyarrow.parquet as pq
import pytest

from crome_ray.config import IngestConfig, load_config
from crome_ray.data.ingest import run_ingest
from crome_ray.storage import RunFolder, StorageConfig, StorageError, UncommittedRunError
from tests.conftest import ingest_dies_at_pair


def s3_cfg(s3, root, *overrides, source=None):
    extra = [f"source.path={source}"] if source else []
    return load_config(
        IngestConfig,
        None,
        [f"storage.root={root}", f"storage.endpoint_url={s3.endpoint}", *extra, *overrides],
    )


@pytest.fixture()
def ingested(s3, samples):
    bucket = s3.new_bucket()
    cfg = s3_cfg(
        s3, f"s3://{bucket}/crome", "run_name=uf", source=samples / "ultrafeedback" / "eval_200.jsonl"
    )
    return bucket, run_ingest(cfg)


def test_ingest_writes_a_committed_run_to_s3_that_pyarrow_reads_back(s3, ingested):
    bucket, result = ingested
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    attempt = f"crome/ingest/uf/attempts/{result.manifest['attempt']}"
    assert keys == [
        "crome/ingest/uf/_COMMITTED",
        f"{attempt}/_ATTEMPT.json",
        f"{attempt}/manifest.json",
        f"{attempt}/pairs/part-00000.parquet",
        f"{attempt}/quarantine/part-00000.parquet",
    ]
    table = pq.read_table(f"{bucket}/{attempt}/pairs", filesystem=s3.pyarrow_fs())
    assert table.num_rows == result.counts["pairs_written"] > 150
    run = RunFolder.from_uri(result.run.uri, StorageConfig(endpoint_url=s3.endpoint))
    assert run.manifest()["counts"] == result.counts


@pytest.mark.ray
def test_ray_data_reads_the_pairs_table_from_s3(s3, ingested, ray_cluster):
    import ray
    from ray.data.expressions import col

    bucket, result = ingested
    attempt = f"crome/ingest/uf/attempts/{result.manifest['attempt']}"
    ds = ray.data.read_parquet(f"s3://{bucket}/{attempt}/pairs", filesystem=s3.pyarrow_fs())
    assert ds.count() == result.counts["pairs_written"]
    rows = ds.filter(expr=col("label") == "chosen").take(3)
    assert len(rows) == 3 and all(r["prompt"] and r["pair_id"] for r in rows)


def test_a_source_on_s3_found_through_aws_endpoint_url(s3, samples, monkeypatch, tmp_path):
    bucket = s3.new_bucket()
    s3.client().upload_file(
        str(samples / "eval" / "llmbar_natural" / "dataset.json"), bucket, "in/llmbar.json"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # the variable Ray and boto read, no config needed
    cfg = load_config(
        IngestConfig,
        None,
        [
            f"source.path=s3://{bucket}/in/llmbar.json",
            "source.format=llmbar",
            f"storage.root=s3://{bucket}/out",
        ],
    )
    result = run_ingest(cfg)
    assert result.counts["pairs_written"] == 100 and result.run.uri.startswith(f"s3://{bucket}/out/ingest/")


def test_an_uncommitted_s3_run_is_refused(s3, ingested):
    bucket, result = ingested
    s3.client().delete_object(Bucket=bucket, Key="crome/ingest/uf/_COMMITTED")  # as if it crashed
    run = RunFolder.from_uri(result.run.uri, StorageConfig(endpoint_url=s3.endpoint))
    with pytest.raises(UncommittedRunError, match="not committed"):
        run.read_table("pairs")


def test_a_wrong_bucket_fails_fast_and_says_so(s3, samples):
    cfg = s3_cfg(s3, "s3://no-such-bucket/crome", source=samples / "ultrafeedback" / "eval_200.jsonl")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"):
        run_ingest(cfg)


def test_a_wrong_source_bucket_fails_fast_and_says_so(s3):
    bucket = s3.new_bucket()
    cfg = s3_cfg(s3, f"s3://{bucket}/out", source="s3://missing-input/uf.jsonl")
    with pytest.raises(StorageError, match="bucket 'missing-input' does not exist"):
        run_ingest(cfg)


def test_missing_credentials_fail_fast_naming_the_variables(s3, samples, monkeypatch, tmp_path):
    bucket = s3.new_bucket()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cfg = s3_cfg(s3, f"s3://{bucket}/crome", source=samples / "ultrafeedback" / "eval_200.jsonl")
    with pytest.raises(StorageError, match=r"no AWS credentials found .* AWS_ACCESS_KEY_ID"):
        run_ingest(cfg)


def test_the_oracle_cache_and_ledger_live_on_s3_too(s3):
    from crome_ray.oracle.cache import LedgerStore, ResponseCache
    from crome_ray.oracle.protocol import OracleResult, Usage

    bucket = s3.new_bucket()
    storage = StorageConfig(endpoint_url=s3.endpoint)
    cache = ResponseCache(f"s3://{bucket}/cache", "gemini", "gemini-2.5-flash", storage)
    results = [
        OracleResult(
            key=f"k{i}",
            text=f'{{"v": {i}}}',
            parsed={"v": i},
            usage=Usage(10, 5),
            cost_usd=0.001,
            latency_s=0.1,
            backend="gemini",
            model="gemini-2.5-flash",
        )
        for i in range(3)
    ]
    locations = [cache.append(r) for r in results]
    assert cache.read(locations[1]).parsed == {"v": 1}
    fresh = ResponseCache(f"s3://{bucket}/cache", "gemini", "gemini-2.5-flash", storage)  # another process
    assert sorted(key for key, _, _ in fresh.scan()) == ["k0", "k1", "k2"]
    ledger = LedgerStore(f"s3://{bucket}/runs/oracle/r.ledger.json", storage)
    assert ledger.load() is None
    ledger.save({"allocated": 0.25, "spent": 0.2})
    assert LedgerStore(f"s3://{bucket}/runs/oracle/r.ledger.json", storage).load()["allocated"] == 0.25


def test_a_forced_ingest_that_dies_part_way_on_s3_leaves_the_committed_run_byte_identical(
    s3, ingested, samples, monkeypatch
):
    """S3 has no atomic rename: the marker, one PUT, is the switch."""
    bucket, first = ingested
    client = s3.client()

    def objects():
        listed = client.list_objects_v2(Bucket=bucket, Prefix="crome/ingest/uf/")["Contents"]
        return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    before = objects()
    ingest_dies_at_pair(monkeypatch, 30)
    cfg = s3_cfg(s3, f"s3://{bucket}/crome", "run_name=uf", "source.ties=keep", "rows_per_file=10",
                 source=samples / "ultrafeedback" / "eval_200.jsonl")  # fmt: skip
    with pytest.raises(ConnectionError):
        run_ingest(cfg, force=True)
    after = objects()
    assert {k: v for k, v in after.items() if k in before} == before  # every old byte as it was
    assert len(after) > len(before)  # the dead attempt wrote parts, in a folder of its own
    run = RunFolder.from_uri(first.run.uri, StorageConfig(endpoint_url=s3.endpoint))
    assert run.manifest() == first.manifest
    assert run.read_table("pairs").num_rows == first.counts["pairs_written"]
