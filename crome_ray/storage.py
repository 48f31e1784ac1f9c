"""Paths, filesystems and run folders: the only module that knows where data lives.

URIs are local paths, ``s3://bucket/key`` (s3fs; any S3-compatible endpoint) or
``hf://datasets/...`` (huggingface_hub, read-only). Filesystems are fsspec objects,
which pyarrow and Ray Data accept as they are.

A run folder is ``<root>/<job>/<run-name>/``. A step writes its outputs, then
``manifest.json`` (config, counts, versions, timings), then the ``_COMMITTED``
marker, last. Readers refuse a folder without the marker; writers skip a committed
folder made by the same config fingerprint and refuse one made by another, unless
forced. A half-written folder left by a crash is cleared and written again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from crome_ray.config import StorageConfig

COMMIT_MARKER = "_COMMITTED"
MANIFEST = "manifest.json"


class StorageError(RuntimeError):
    """A storage location is missing, unreachable or refuses us; says what to fix."""


class UncommittedRunError(StorageError):
    """A run folder exists but its step never committed (crashed or still running)."""


class RunConflictError(StorageError):
    """A committed run folder was made by a different config."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://b/k`` -> ("s3", "b/k"); a local path -> ("file", absolute path)."""
    if uri.startswith("file://"):
        return "file", str(Path(uri[7:]).resolve())
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return proto, rest
    return "file", str(Path(uri).expanduser().resolve())


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
    if proto == "hf":
        return fsspec.filesystem("hf"), path
    raise StorageError(f"unsupported storage scheme {proto!r} in {uri!r}: use a local path, s3:// or hf://")


def describe_s3_failure(uri: str, exc: BaseException, storage: StorageConfig | None) -> str:
    """Turn botocore/s3fs failures into one sentence saying what to fix."""
    bucket = split_uri(uri)[1].split("/", 1)[0]
    endpoint = (storage and storage.endpoint_url) or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    name = type(exc).__name__
    text = str(exc)
    if "NoCredentials" in name or "Unable to locate credentials" in text:
        return (
            f"no AWS credentials found for {uri!r}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role)"
        )
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return f"bucket {bucket!r} does not exist at {endpoint} (from {uri!r}): create it or fix the URI"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access to bucket {bucket!r} at {endpoint} was denied: check the credentials' permissions"
    return f"cannot reach {uri!r} at {endpoint}: {name}: {text}"


def check_root(uri: str, storage: StorageConfig | None = None) -> None:
    """Fail fast, before any work, if an s3:// root's bucket cannot be used."""
    proto, path = split_uri(uri)
    if proto not in ("s3", "s3a"):
        return
    fs, _ = filesystem(uri, storage)
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, refresh=True)
    except Exception as e:  # sorted into a message by describe_s3_failure
        raise StorageError(describe_s3_failure(uri, e, storage)) from None


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
        "google-genai",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


@dataclass(frozen=True)
class RunFolder:
    """``<root>/<job>/<run-name>/`` on some filesystem."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str

    @classmethod
    def at(cls, root: str, job: str, run_name: str, storage: StorageConfig | None = None) -> RunFolder:
        uri = join(root, job, run_name)
        fs, path = filesystem(uri, storage)
        return cls(uri=uri, fs=fs, path=path)

    @classmethod
    def from_uri(cls, uri: str, storage: StorageConfig | None = None) -> RunFolder:
        fs, path = filesystem(uri, storage)
        return cls(uri=uri.rstrip("/"), fs=fs, path=path.rstrip("/"))

    def file(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def uri_of(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_committed(self) -> bool:
        return self.fs.exists(self.file(COMMIT_MARKER))

    def manifest(self) -> dict[str, Any]:
        """The manifest of a committed run; refuses an uncommitted folder."""
        if not self.is_committed():
            if self.exists():
                raise UncommittedRunError(
                    f"run folder {self.uri} is not committed (no {COMMIT_MARKER} marker): the step "
                    "that writes it crashed or is still running. Re-run that step to finish it."
                )
            raise StorageError(f"run folder {self.uri} does not exist")
        with self.fs.open(self.file(MANIFEST), "rb") as f:
            return json.loads(f.read())

    def prepare(self, fingerprint: str, force: bool = False) -> bool:
        """Get ready to write. Returns False when a matching committed run exists (skip)."""
        if self.is_committed() and not force:
            found = self.manifest().get("fingerprint")
            if found == fingerprint:
                return False
            raise RunConflictError(
                f"run folder {self.uri} was committed by a different config (fingerprint "
                f"{found}, this one {fingerprint}): choose another run name, or force to overwrite"
            )
        if self.exists():
            self.fs.rm(self.path, recursive=True)
        self.fs.makedirs(self.path, exist_ok=True)
        return True

    def commit(self, manifest: dict[str, Any]) -> None:
        """Write the manifest, then the marker. Only the marker makes the run visible."""
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        with self.fs.open(self.file(MANIFEST), "wb") as f:
            f.write(body)
        marker = {
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fingerprint": manifest.get("fingerprint"),
        }
        with self.fs.open(self.file(COMMIT_MARKER), "wb") as f:
            f.write(json.dumps(marker).encode())

    def table_files(self, table: str) -> list[str]:
        folder = self.file(table)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if str(p).endswith(".parquet"))

    def read_table(self, table: str) -> pa.Table:
        """Read a whole table of a committed run (refuses uncommitted folders)."""
        manifest = self.manifest()
        files = self.table_files(table)
        if not files:
            raise StorageError(f"run {self.uri} has no table {table!r}; it has {manifest.get('tables')}")
        return pa.concat_tables([pq.read_table(f, filesystem=self.fs) for f in files])


class PartWriter:
    """Buffers rows and writes ``<table>/part-NNNNN.parquet`` files of at most N rows."""

    def __init__(self, run: RunFolder, table: str, schema: pa.Schema, rows_per_file: int):
        self.run, self.table, self.schema, self.rows_per_file = run, table, schema, rows_per_file
        self._buffer: list[dict[str, Any]] = []
        self.files: list[str] = []
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self._buffer and self.files:
            return
        name = f"{self.table}/part-{len(self.files):05d}.parquet"
        self.run.fs.makedirs(self.run.file(self.table), exist_ok=True)
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        pq.write_table(table, self.run.file(name), filesystem=self.run.fs, compression="zstd")
        self.files.append(name)
        self.rows += len(self._buffer)
        self._buffer = []

    def close(self) -> list[str]:
        """Flush the rest; an empty table still gets one (empty) file with its schema."""
        if self._buffer or not self.files:
            self.flush()
        return self.files


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
        if proto in ("s3", "s3a"):
            raise StorageError(describe_s3_failure(uri, e, storage)) from None
        raise
    if not found:
        raise StorageError(f"no input files at {uri!r} (looked for {', '.join(suffixes)})")
    for p in found:
        yield p if proto == "file" else f"{proto}://{p}"
