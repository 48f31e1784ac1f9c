"""The evaluation's score cache: each model's reward for each (prompt, answer) text, kept under
the storage root so a re-run scores only what it has not scored with that model before (an
adapter: pyarrow Parquet through the run storage's filesystem).

A model's scores live in ``<root>/score-cache/<identity>/part-<writer>.parquet`` (columns
``key``, ``score``; ``key`` is ``variants.text_key``). ``identity`` is a digest of what
determines a score: the model as it is now, the scoring's ``max_length`` (a text is truncated
to it) and ``SCORER_VERSION`` (the scoring code's). A model is identified by

- a committed training run (local or in a bucket): its commit's fingerprint and attempt (a
  retrained model is a new attempt, so a new identity);
- any other folder: every file's path, size and modification time (or its ETag in a bucket);
  a copy that keeps another checkpoint's sizes and times (``cp -p``, ``rsync -a``) looks the
  same, so score such a folder with ``scoring.cache: false``;
- a built-in name or a Hugging Face id: the name (a hub model is taken as fixed; name a
  folder to score a model that changes).

Parts are written once and never rewritten, each by one writer, so concurrent evaluations need
no lock; a part torn by a crash fails to read and is skipped (its texts are scored again). The
oracle's response cache (``oracle.cache``) keeps JSON answers by request; neither it nor a
Ray Data cache keeps a model's scores across runs, hence this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crome_ray.config import StorageConfig
from crome_ray.storage import RunFolder, filesystem, is_bucket_uri, join

FOLDER = "score-cache"
# the scoring code's version: raise it when a change to how texts are encoded or scored (the chat
# template, truncation, the reward head) would give another score for the same model and text
SCORER_VERSION = 1
SCHEMA = pa.schema(
    [pa.field("key", pa.string(), nullable=False), pa.field("score", pa.float64(), nullable=False)]
)


def _files(uri: str, storage: StorageConfig | None) -> list[tuple[str, object, object]]:
    fs, path = filesystem(uri, storage)
    found = fs.find(path, detail=True)
    out = []
    for name, info in sorted(found.items()):
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("updated")
        out.append((name[len(path) :], info.get("size"), str(stamp)))
    return out


def model_identity(model: str, storage: StorageConfig | None, max_length: int) -> str:
    """A digest of what determines ``model``'s scores (see the module docstring)."""
    if is_bucket_uri(model) or Path(model).expanduser().is_dir():
        run = RunFolder.from_uri(model, storage)
        marker = run.marker() if run.is_committed() else None
        if marker:
            what: object = ["run", run.uri, marker.get("fingerprint"), marker.get("attempt")]
        elif is_bucket_uri(model):
            what = ["folder", model, _files(model, storage)]
        else:
            root = Path(model).expanduser().resolve()
            stats = [(str(p.relative_to(root)), p.stat()) for p in sorted(root.rglob("*")) if p.is_file()]
            what = ["folder", str(root), [(n, s.st_size, s.st_mtime_ns) for n, s in stats]]
    else:
        what = ["name", model]
    blob = json.dumps([what, max_length, SCORER_VERSION], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class ScoreCache:
    """One model's cached scores (``identity`` from ``model_identity``) under ``root``."""

    def __init__(self, root: str, identity: str, storage: StorageConfig | None = None):
        self.uri = join(root, FOLDER, identity)
        self.fs, self.path = filesystem(self.uri, storage)

    def read(self, keys: Iterable[str]) -> dict[str, float]:
        """The cached score of each of ``keys`` that has one."""
        wanted = set(keys)
        out: dict[str, float] = {}
        if not wanted or not self.fs.exists(self.path):
            return out
        for part in sorted(self.fs.glob(f"{self.path}/part-*.parquet")):
            try:
                with self.fs.open(part, "rb") as f:
                    table = pq.read_table(f, schema=SCHEMA)
            except (OSError, pa.ArrowInvalid):
                continue  # torn by a crash: its texts are scored again
            for k, s in zip(table.column("key").to_pylist(), table.column("score").to_pylist(), strict=True):
                if k in wanted:
                    out[k] = s
        return out

    def write(self, scores: Mapping[str, float]) -> None:
        """``scores`` as one new part (nothing when empty)."""
        if not scores:
            return
        table = pa.table({"key": list(scores), "score": [float(v) for v in scores.values()]}, schema=SCHEMA)
        self.fs.makedirs(self.path, exist_ok=True)
        name = f"{self.path}/part-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = name + ".tmp"
        with self.fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        self.fs.mv(tmp, name)  # a reader sees a whole part or none
