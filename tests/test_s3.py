"""What only S3 has: AWS's credential chain (moto's server speaks the real protocol on 127.0.0.1).
What S3 shares with Google Cloud Storage is in tests/test_buckets.py."""

import pytest

from crome_ray.data.ingest import run_ingest
from crome_ray.storage import StorageError
from tests.test_buckets import ingest_cfg


def test_missing_credentials_fail_fast_naming_the_variables(s3, samples, monkeypatch, tmp_path):
    bucket = s3.new_bucket()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cfg = ingest_cfg(s3, f"s3://{bucket}/crome", source=samples / "ultrafeedback" / "eval_200.jsonl")
    with pytest.raises(StorageError, match=r"no AWS credentials found .* AWS_ACCESS_KEY_ID"):
        run_ingest(cfg)
