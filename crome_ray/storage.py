"""Paths, filesystems and run folders: the only module that knows where data lives.

URIs are local paths, ``s3://bucket/key`` (s3fs; any S3-compatible endpoint),
``gs://bucket/key`` (gcsfs; Google Cloud Storage or an emulator) or ``hf://datasets/...``
(huggingface_hub, read-only). Filesystems are fsspec objects, which pyarrow and Ray Data
accept as they are.

A run folder is ``<root>/<job>/<run-name>/``. Each attempt at a step writes into
its own ``attempts/<id>/`` folder: its tables, then ``manifest.json``. The commit is
one switch: the ``_COMMITTED`` marker, written last, names the attempt that is the
run's output (see ``RunFolder``). Readers refuse a run without the marker. When a
step skips, conflicts or resumes is decided in ``crome_ray.runs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from crome_ray import ray_runtime
from crome_ray.config import StorageConfig
from crome_ray.errors import CromeError

COMMIT_MARKER = "_COMMITTED"
MANIFEST = "manifest.json"
ATTEMPTS = "attempts"
ATTEMPT_LABEL = "_ATTEMPT.json"


class StorageError(CromeError, RuntimeError):
    """A storage location is missing, unreachable or refuses us; says what to fix."""


class UncommittedRunError(StorageError):
    """A run folder exists but its step never committed (crashed or still running)."""


class RunConflictError(StorageError):
    """A committed run folder was made by a different config."""


class LocalRootOnClusterError(StorageError):
    """A local storage root on a Ray cluster of several nodes, not declared shared."""


S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs", "gcs")
# object stores: a bucket, then keys; the URI's scheme is stripped for fsspec and pyarrow
BUCKET_SCHEMES = S3_SCHEMES + GCS_SCHEMES


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://b/k`` -> ("s3", "b/k"); a local path -> ("file", absolute path)."""
    if uri.startswith("file://"):
        return "file", str(Path(uri[7:]).resolve())
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return proto, rest
    return "file", str(Path(uri).expanduser().resolve())


def is_bucket_uri(uri: str) -> bool:
    """``s3://``, ``s3a://``, ``gs://`` or ``gcs://``: a bucket in an object store."""
    return "://" in uri and split_uri(uri)[0] in BUCKET_SCHEMES


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it."""
    storage = storage or StorageConfig()
    proto, path = split_uri(uri)
    if proto == "file":
        return fsspec.filesystem("file"), path
    if proto in ("s3", "s3a"):
        kwargs: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if storage.region:
            client_kwargs["region_name"] = storage.region
        if client_kwargs:
            kwargs["client_kwargs"] = client_kwargs
        # skip_instance_cache: tests and jobs change endpoints/credentials between calls
        return fsspec.filesystem("s3", skip_instance_cache=True, **kwargs), path
    if proto in GCS_SCHEMES:
        return _gcs_filesystem(storage), path
    if proto == "hf":
        return fsspec.filesystem("hf"), path
    raise StorageError(
        f"unsupported storage scheme {proto!r} in {uri!r}: use a local path, s3://, gs:// or hf://"
    )


def gcs_endpoint(storage: StorageConfig | None) -> str | None:
    """The GCS endpoint named by hand: ``storage.endpoint_url``, else ``STORAGE_EMULATOR_HOST``
    (the variable Google's own clients read); None for Google Cloud Storage itself."""
    endpoint = (storage and storage.endpoint_url) or os.environ.get("STORAGE_EMULATOR_HOST")
    if not endpoint or endpoint == "default":
        return None
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _gcs_filesystem(storage: StorageConfig | None) -> fsspec.AbstractFileSystem:
    endpoint = gcs_endpoint(storage)
    if endpoint:
        # An endpoint named by hand is an emulator (or a test server): no credentials, and
        # gcsfs's plain JSON-API filesystem. gcsfs's default class (ExtendedGcsFileSystem)
        # first asks the gRPC Storage Control API for each bucket's layout, which emulators
        # do not serve: 60 s of retries on every call, measured against gcp-storage-emulator.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file and not Path(key_file).expanduser().is_file():
        # gcsfs would go on without credentials (anonymous) and fail later with a 401
        raise StorageError(
            f"GOOGLE_APPLICATION_CREDENTIALS names {key_file!r}, which is not a file: point it at "
            "a service-account key file, or unset it to use the instance's service account"
        )
    # token=None: google-auth's default chain (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    # application-default login, the GCE/GKE instance's service account), else anonymous
    return fsspec.filesystem("gs", token=None, skip_instance_cache=True)


def pyarrow_filesystem(uri: str, storage: StorageConfig | None = None):
    """A pyarrow filesystem over the fsspec one for ``uri`` (Ray Data readers, Ray Train storage)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = filesystem(uri, storage)
    return PyFileSystem(FSSpecHandler(fs))


def path_in_filesystem(uri: str) -> str:
    """``s3://b/k``, ``gs://b/k`` -> ``b/k`` (what a pyarrow filesystem wants); a local path stays."""
    proto, path = split_uri(uri)
    return path if proto in BUCKET_SCHEMES else uri


def is_remote(uri: str) -> bool:
    return split_uri(uri)[0] != "file"


def describe_bucket_failure(uri: str, exc: BaseException, storage: StorageConfig | None) -> str:
    """Turn s3fs/botocore and gcsfs failures into one sentence saying what to fix."""
    proto, path = split_uri(uri)
    bucket = path.split("/", 1)[0]
    gcs = proto in GCS_SCHEMES
    if gcs:
        endpoint = gcs_endpoint(storage) or "Google Cloud Storage"
    else:
        endpoint = (storage and storage.endpoint_url) or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    name = type(exc).__name__
    text = str(exc)
    if "NoCredentials" in name or "Unable to locate credentials" in text:
        return (
            f"no AWS credentials found for {uri!r}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role)"
        )
    if gcs and "Anonymous caller" in text:
        # what GCS answers a request that carries no credentials (gcsfs's last resort)
        return (
            f"no Google Cloud credentials found for {uri!r} (the request went anonymously): set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth "
            "application-default login`, or run on an instance whose service account may use "
            f"bucket {bucket!r}"
        )
    if gcs and getattr(exc, "code", None) == 401:
        return (
            f"the Google Cloud credentials were refused for {uri!r} ({text}): check the key file "
            "in GOOGLE_APPLICATION_CREDENTIALS, or the instance's service account"
        )
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return f"bucket {bucket!r} does not exist at {endpoint} (from {uri!r}): create it or fix the URI"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access to bucket {bucket!r} at {endpoint} was denied: check the credentials' permissions"
    return f"cannot reach {uri!r} at {endpoint}: {name}: {text}"


def check_root(uri: str, storage: StorageConfig | None = None) -> None:
    """Fail fast, before any work, if an s3:// or gs:// root's bucket cannot be used."""
    if not is_bucket_uri(uri):
        return
    fs, path = filesystem(uri, storage)
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, refresh=True)
    except Exception as e:  # sorted into a message by describe_bucket_failure
        raise StorageError(describe_bucket_failure(uri, e, storage)) from None


def local_root_on_cluster(
    storage: StorageConfig, nodes: list[dict[str, Any]]
) -> LocalRootOnClusterError | None:
    """The error of a job about to write under a local ``storage.root`` on a Ray cluster with more
    than one alive node (``nodes`` as ``ray.nodes()`` lists them), unless the root is declared the
    same shared filesystem on every node; None when the root reaches every node's writers.

    Why refuse: a job's writers run on several nodes (the augmentation's sinks and oracle
    ledgers, training's checkpoints), and each would write its part of the run under the same
    path on its own disk: a run scattered across machines, that no reader sees whole."""
    alive = sum(1 for n in nodes if n.get("Alive"))
    if alive <= 1 or storage.shared or is_bucket_uri(storage.root):
        return None
    root = storage.root
    return LocalRootOnClusterError(
        f"storage.root={root!r} is not a bucket, and this Ray cluster has {alive} alive nodes: each node "
        "would write its part of the run to its own disk. Use a bucket: storage.root=s3://<bucket>/runs "
        f"(or gs://<bucket>/runs), or set storage.shared=true if {root} is the same shared filesystem "
        "on every node"
    )


def check_root_on_cluster(storage: StorageConfig) -> None:
    """Fail fast, before any work, if ``local_root_on_cluster`` refuses the Ray cluster this
    process is connected to (none connected: nothing to check)."""
    nodes = ray_runtime.cluster_nodes()
    error = None if nodes is None else local_root_on_cluster(storage, nodes)
    if error is not None:
        raise error


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "crome-ray",
        "ray",
        "torch",
        "transformers",
        "peft",
        "pyarrow",
        "s3fs",
        "gcsfs",
        "google-genai",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


@dataclass(frozen=True)
class Folder:
    """A plain folder on some filesystem: where one attempt of a step writes its files."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def from_uri(cls, uri: str, storage: StorageConfig | None = None) -> Folder:
        fs, path = filesystem(uri, storage)
        return cls(uri=uri.rstrip("/"), fs=fs, path=path.rstrip("/"))

    def file(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def uri_of(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def table_files(self, table: str) -> list[str]:
        folder = self.file(table)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if str(p).endswith(".parquet"))

    def write_json(self, name: str, doc: dict[str, Any]) -> None:
        body = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
        with self.fs.open(self.file(name), "wb") as f:
            f.write(body)

    def read_json(self, name: str) -> dict[str, Any]:
        with self.fs.open(self.file(name), "rb") as f:
            return json.loads(f.read())


def _new_attempt_id() -> str:
    # sortable by start time (to the microsecond); the suffix keeps two writers apart
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1e6) % 1_000_000:06d}"
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class RunFolder:
    """``<root>/<job>/<run-name>/``: the attempts of one step, and the marker naming the one that counts.

    Each attempt writes into ``attempts/<id>/`` and never touches another attempt. The
    commit writes the attempt's ``manifest.json``, then replaces ``_COMMITTED`` (which
    names the attempt) in one step: an atomic rename on local disk, one PUT on S3 or GCS,
    where an object is replaced whole or not at all. Until then readers see the previous
    committed attempt, so a forced run that fails loses nothing. Attempts other than
    the committed one are removed after the switch.

    Readers (``manifest``, ``table_files``, ``read_table``, ``file``, ``uri_of``) go to
    the committed attempt and refuse a run that has none. A marker without an
    ``attempt`` field (written before attempts existed) names the run folder itself.
    """

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def at(cls, root: str, job: str, run_name: str, storage: StorageConfig | None = None) -> RunFolder:
        return cls.from_uri(join(root, job, run_name), storage)

    @classmethod
    def from_uri(cls, uri: str, storage: StorageConfig | None = None) -> RunFolder:
        fs, path = filesystem(uri, storage)
        return cls(uri=uri.rstrip("/"), fs=fs, path=path.rstrip("/"))

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def marker(self) -> dict[str, Any] | None:
        """The commit marker's contents, or None when the run has never committed."""
        try:
            with self.fs.open("/".join([self.path, COMMIT_MARKER]), "rb") as f:
                return json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):  # no marker, or the path is a file
            return None

    def is_committed(self) -> bool:
        return self.marker() is not None

    def committed(self) -> Folder:
        """The folder of the committed attempt; refuses a run that never committed."""
        marker = self.marker()
        if marker is None:
            if self.exists():
                raise UncommittedRunError(
                    f"run folder {self.uri} is not committed (no {COMMIT_MARKER} marker): the step "
                    "that writes it crashed or is still running. Re-run that step to finish it."
                )
            raise StorageError(f"run folder {self.uri} does not exist")
        attempt = marker.get("attempt")
        if attempt is None:
            return Folder(self.uri, self.fs, self.path)
        return self.attempt(attempt)

    def attempt(self, attempt_id: str) -> Folder:
        return Folder(
            join(self.uri, ATTEMPTS, attempt_id), self.fs, "/".join([self.path, ATTEMPTS, attempt_id])
        )

    def attempt_ids(self) -> list[str]:
        folder = "/".join([self.path, ATTEMPTS])
        if not self.fs.exists(folder):
            return []
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))

    def manifest(self) -> dict[str, Any]:
        """The manifest of the committed attempt; refuses an uncommitted run."""
        return self.committed().read_json(MANIFEST)

    def file(self, *parts: str) -> str:
        return self.committed().file(*parts)

    def uri_of(self, *parts: str) -> str:
        return self.committed().uri_of(*parts)

    def table_files(self, table: str) -> list[str]:
        return self.committed().table_files(table)

    def read_table(self, table: str) -> pa.Table:
        """Read a whole table of the committed attempt (refuses uncommitted runs)."""
        folder = self.committed()
        files = folder.table_files(table)
        if not files:
            tables = folder.read_json(MANIFEST).get("tables")
            raise StorageError(f"run {self.uri} has no table {table!r}; it has {sorted(tables or {})}")
        return pa.concat_tables([pq.read_table(f, filesystem=self.fs) for f in files])

    def new_attempt(self, fingerprint: str) -> Folder:
        """A fresh attempt folder, labelled with the config fingerprint it is written for."""
        folder = self.attempt(_new_attempt_id())
        self.fs.makedirs(folder.path, exist_ok=True)
        folder.write_json(ATTEMPT_LABEL, {"fingerprint": fingerprint, "started_at": time.time()})
        return folder

    def resumable_attempt(self, fingerprint: str) -> Folder | None:
        """The newest uncommitted attempt started for ``fingerprint`` (a crashed run to resume)."""
        committed = (self.marker() or {}).get("attempt")
        for attempt_id in reversed(self.attempt_ids()):
            if attempt_id == committed:
                continue
            folder = self.attempt(attempt_id)
            try:
                label = folder.read_json(ATTEMPT_LABEL)
            except FileNotFoundError:
                continue
            if label.get("fingerprint") == fingerprint:
                return folder
        return None

    def commit(self, attempt: Folder, manifest: dict[str, Any]) -> None:
        """Write the attempt's manifest, then switch the marker to it; then drop the other attempts."""
        attempt_id = attempt.path.rsplit("/", 1)[-1]
        attempt.write_json(MANIFEST, manifest)
        marker = {
            "attempt": attempt_id,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fingerprint": manifest.get("fingerprint"),
        }
        body = json.dumps(marker).encode()
        target = "/".join([self.path, COMMIT_MARKER])
        if split_uri(self.uri)[0] == "file":
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(body)
            os.replace(tmp, target)  # atomic: readers see the old marker or the new one
        else:
            with self.fs.open(target, "wb") as f:  # one upload: the object is replaced whole
                f.write(body)
        self.drop_attempts(keep=attempt_id)

    def drop_attempts(self, keep: str) -> None:
        """Remove every attempt but ``keep``, and what a run written before attempts left behind."""
        for attempt_id in self.attempt_ids():
            if attempt_id != keep:
                self.fs.rm(self.attempt(attempt_id).path, recursive=True)
        for entry in self.fs.ls(self.path, detail=False):
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if name not in (ATTEMPTS, COMMIT_MARKER):
                self.fs.rm(str(entry), recursive=True)


# rows held in memory before they go to the open part file as one row group, and the bytes an
# object-store upload holds before it sends a part (s3fs and gcsfs default to 50 MiB per open file)
ROW_GROUP_ROWS = 1024
UPLOAD_BLOCK_BYTES = 8 * 2**20


class PartWriter:
    """Writes ``<table>/<prefix>-NNNNN.parquet`` files of at most N rows, streaming.

    Rows wait in a buffer of ``ROW_GROUP_ROWS`` at most; each full buffer goes to the open part
    file as one row group, and a file that reaches N rows is closed and the next one opened. So
    what a writer holds in memory stays the same whatever the table's size (a run that writes a
    million rows holds no more than one that writes a thousand). A part file is complete only
    once closed: the files belong to an attempt, which no reader sees before its commit.
    """

    def __init__(self, run: Folder, table: str, schema: pa.Schema, rows_per_file: int, prefix: str = "part"):
        self.run, self.table, self.schema, self.rows_per_file = run, table, schema, rows_per_file
        self.prefix = prefix  # writers that share a table each need their own
        self._buffer: list[dict[str, Any]] = []
        self._sink: Any = None  # the open part's fsspec file, or None
        self._writer: pq.ParquetWriter | None = None  # writing into it
        self._file_rows = 0
        self.files: list[str] = []
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= min(ROW_GROUP_ROWS, self.rows_per_file - self._file_rows):
            self.flush()

    def flush(self) -> None:
        """The buffered rows to the open part file (opened if need be), as one row group."""
        if not self._buffer:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._file_rows += len(self._buffer)
        self.rows += len(self._buffer)
        self._buffer = []
        if self._file_rows >= self.rows_per_file:
            self._close_file()

    def close(self) -> list[str]:
        """Flush the rest; an empty table still gets one (empty) file with its schema."""
        self.flush()
        if not self.files:
            self._open()
        self._close_file()
        return self.files

    def _open(self) -> None:
        name = f"{self.table}/{self.prefix}-{len(self.files):05d}.parquet"
        self.run.fs.makedirs(self.run.file(self.table), exist_ok=True)
        sink = self.run.fs.open(self.run.file(name), "wb", block_size=UPLOAD_BLOCK_BYTES)
        try:
            self._writer = pq.ParquetWriter(sink, self.schema, compression="zstd")
        except BaseException:
            sink.close()
            raise
        self._sink, self._file_rows = sink, 0
        self.files.append(name)

    def _close_file(self) -> None:
        if self._writer is None:
            return
        sink, writer = self._sink, self._writer
        self._sink, self._writer, self._file_rows = None, None, 0
        try:
            writer.close()
        finally:
            sink.close()


def iter_files(uri: str, storage: StorageConfig | None, suffixes: tuple[str, ...]) -> Iterator[str]:
    """The files a source URI names: one file, every matching file in a folder, or a glob."""
    fs, path = filesystem(uri, storage)
    proto = split_uri(uri)[0]
    try:
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.endswith(suffixes))
        elif fs.exists(path):
            found = [path]
        else:
            found = []
    except Exception as e:
        if proto in BUCKET_SCHEMES:
            raise StorageError(describe_bucket_failure(uri, e, storage)) from None
        raise
    if not found:
        raise StorageError(f"no input files at {uri!r} (looked for {', '.join(suffixes)})")
    for p in found:
        yield p if proto == "file" else f"{proto}://{p}"
