"""The response cache and the spend ledger: what a resumed run must not pay for again.

Cache: every completed answer is written the moment it arrives, one JSON line, to a
segment file that belongs to one writer process
(``<root>/<backend>/<model>/seg-<writer>.jsonl`` on local disk, appended and flushed
per record; on S3, which cannot append, one object per record,
``seg-<writer>-<n>.jsonl``). Segments are never rewritten, so concurrent writers need
no locks, and a killed process loses at most the line it was writing (a torn last
line is skipped on load). The governor keeps the index (key -> segment, offset,
length); a hit is one ranged read.

Ledger: one small JSON document per run (``allocated``, ``spent``), replaced
atomically, read back when the run resumes (see ``oracle.budget``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from crome_ray.config import StorageConfig
from crome_ray.oracle.protocol import OracleResult
from crome_ray.storage import filesystem, join, split_uri


@dataclass(frozen=True)
class Location:
    path: str  # inside the filesystem of the cache root
    offset: int
    length: int


class ResponseCache:
    def __init__(self, root: str, backend: str, model: str, storage: StorageConfig | None = None):
        self.uri = join(root, backend, model)
        self.fs, self.path = filesystem(self.uri, storage)
        self.local = split_uri(self.uri)[0] == "file"
        self.writer = uuid.uuid4().hex[:12]
        self._n = 0
        self._handle = None
        self._offset = 0

    # --- writing (one writer per process) ---------------------------------------------
    def append(self, result: OracleResult) -> Location:
        line = (json.dumps(result.to_record(), ensure_ascii=False) + "\n").encode("utf-8")
        if self.local:
            if self._handle is None:
                os.makedirs(self.path, exist_ok=True)
                seg = f"{self.path}/seg-{self.writer}.jsonl"
                self._handle = open(seg, "ab")  # noqa: SIM115 - kept open for the process's life
                self._offset = self._handle.tell()
                self._seg = seg
            loc = Location(self._seg, self._offset, len(line))
            self._handle.write(line)
            self._handle.flush()  # in the OS now: survives this process being killed
            self._offset += len(line)
            return loc
        seg = f"{self.path}/seg-{self.writer}-{self._n:08d}.jsonl"
        self._n += 1
        self.fs.pipe_file(seg, line)
        return Location(seg, 0, len(line))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # --- reading -------------------------------------------------------------------
    def read(self, loc: Location) -> OracleResult:
        data = self.fs.cat_file(loc.path, start=loc.offset, end=loc.offset + loc.length)
        return OracleResult.from_record(json.loads(data))

    def scan(self) -> Iterator[tuple[str, Location, float]]:
        """Every complete record in the cache: (key, where, its cost)."""
        if not self.fs.exists(self.path):
            return
        for seg in sorted(self.fs.find(self.path)):
            if not seg.endswith(".jsonl"):
                continue
            data = self.fs.cat_file(seg)
            offset = 0
            for line in data.splitlines(keepends=True):
                if line.endswith(b"\n"):
                    try:
                        rec = json.loads(line)
                        yield rec["key"], Location(seg, offset, len(line)), float(rec.get("cost_usd", 0.0))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        pass  # a torn or foreign line: that call is simply asked again
                offset += len(line)


class LedgerStore:
    """One run's spend ledger as a JSON document, replaced atomically."""

    def __init__(self, uri: str, storage: StorageConfig | None = None):
        self.uri = uri
        self.fs, self.path = filesystem(uri, storage)
        self.local = split_uri(uri)[0] == "file"

    def load(self) -> dict[str, Any] | None:
        if not self.fs.exists(self.path):
            return None
        return json.loads(self.fs.cat_file(self.path))

    def save(self, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, sort_keys=True).encode()
        if self.local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        else:
            self.fs.pipe_file(self.path, data)  # an S3 PUT replaces the object atomically
