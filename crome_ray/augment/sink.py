"""The augmentation's table sinks (Ray composition): the stream's records are written to the run's
tables by actors, so the driver reads tallies, not rows.

Why not the driver: every block it reads from Ray's object store stays mapped in its address
space, and the pages count in its RSS until the store reuses them (measured: 192 MiB of such
pages at 100k source rows against 36 MiB at 10k; ``bench/augment_memory.py``). Why not Ray
Data's ``write_parquet``: one stream feeds five tables (pairs, rejected, filtered, controls,
quarantine) that the run lifecycle commits together, and the driver needs each block's tally as
it lands (progress, the verifier's control check) and each file's row count for the manifest;
Ray Data writes one dataset to one folder, closes a file per write task and returns nothing to
the driver until the end.

So: ``TableSink`` actors, started and closed by the driver like the governors, keep one
streaming ``storage.PartWriter`` per table (files of ``rows_per_file`` rows, one row group
buffered), and the last stage of the stream, ``forward`` (a Ray Data task), hands each block
to one of them and passes on what the sink returns: that block's ``Tally`` (counters and the
block's leakage values, no texts). A block that comes twice (a retried task) is written once:
the sink knows the blocks it has written by a digest of their records.

With a local storage root the sinks run on the driver's node and write to the attempt's
absolute path, as the driver did (the run's files stay on one disk). With a bucket root, or a
local one declared the same shared filesystem on every node (``storage.shared``), they can run
anywhere. (A local root not declared shared is refused on a cluster of several nodes before the
job starts: ``storage.local_root_on_cluster``.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from crome_ray.augment.kinds import GATED
from crome_ray.augment.tally import Tally
from crome_ray.config import StorageConfig
from crome_ray.runs import QUARANTINE, Quarantine
from crome_ray.storage import Folder, PartWriter, is_bucket_uri

TALLY_SCHEMA = pa.schema([pa.field("tally", pa.string())])


def block_key(batch: pa.Table) -> str:
    """A digest of a block's records (table, source id and the row itself): the same block,
    the same key, however often a task hands it over. Not the tables and source ids alone: a
    source may hold several pairs of one request under one source id, so two different blocks
    can share those (found: the memory bench's 100k rows repeat the sample's ids every 1,000
    rows, and blocks of 256 lined up). A block that an upstream stage made again with a field
    that differs (a cost, a cache hit) gets another key and is written twice; the driver's
    check then refuses to commit: a failed run, never a wrong one."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("table", "source_id", "row"):
        for value in batch.column(name).to_pylist():
            h.update(b"\x00" if value is None else value.encode())
            h.update(b"\x1f")
    return h.hexdigest()


class TableSink:
    """One writer per table into the run's attempt folder, its files named ``part-<tag>-NNNNN``."""

    def __init__(
        self,
        attempt_uri: str,
        storage_json: str,
        schemas: dict[str, pa.Schema],
        rows_per_file: int,
        tag: str,
        source: str = "augment",
    ):
        self.folder = Folder.from_uri(attempt_uri, StorageConfig.model_validate_json(storage_json))
        self.schemas, self.rows_per_file, self.tag, self.source = schemas, rows_per_file, tag, source
        self.writers: dict[str, PartWriter] = {}
        self.quarantine: Quarantine | None = None
        self.written: set[str] = set()  # block keys: ~100 bytes a block
        self.repeats = 0

    def write(self, key: str, batch: pa.Table) -> str:
        """Write a block's rows to their tables; the block's tally as JSON."""
        tally = Tally(sample=None)
        repeat = key in self.written
        self.repeats += repeat
        for table, source_id, row_json in zip(
            batch.column("table").to_pylist(),
            batch.column("source_id").to_pylist(),
            batch.column("row").to_pylist(),
            strict=True,
        ):
            row = json.loads(row_json)
            tally.add(table, row)
            if repeat or table not in self.schemas:  # "stats" rows are only counted
                continue
            if table == QUARANTINE:
                if self.quarantine is None:
                    self.quarantine = Quarantine(self._writer(QUARANTINE), self.source, self.source)
                self.quarantine.put(
                    row["location"], row["reason"], row["detail"], row["excerpt"], source_id=source_id,
                    stage=row["stage"],
                )  # fmt: skip
            else:
                gated = table == "pairs" and row["kind"] in GATED
                self._writer(table, row["kind"] if gated else None).add(row)
        self.written.add(key)
        return json.dumps(tally.as_doc())

    def _writer(self, table: str, kind: str | None = None) -> PartWriter:
        """A table's writer; an oracle-written kind's pairs get files of their own
        (``part-<tag>-<kind>-NNNNN``, writer key ``pairs/<kind>``), so the quality gate can move
        a kind out of ``pairs`` whole."""
        key = table if kind is None else f"{table}/{kind}"
        if key not in self.writers:
            prefix = f"part-{self.tag}" if kind is None else f"part-{self.tag}-{kind}"
            self.writers[key] = PartWriter(
                self.folder, table, self.schemas[table], self.rows_per_file, prefix
            )
        return self.writers[key]

    def close(self) -> dict[str, Any]:
        """Close every file; per table the files (relative to the attempt) and rows written, and
        for ``pairs`` the same per oracle-written kind (``kinds``: the files the gate may move)."""
        tables: dict[str, dict[str, Any]] = {}
        for key, w in self.writers.items():
            table, _, kind = key.partition("/")
            files = w.close()
            entry = tables.setdefault(table, {"files": [], "rows": 0, "kinds": {}})
            entry["files"] = sorted(entry["files"] + files)
            entry["rows"] += w.rows
            if kind:
                entry["kinds"][kind] = {"files": files, "rows": w.rows}
        return {"tables": tables, "repeats": self.repeats}


def start_sinks(count: int, attempt: Folder, storage_json: str, schemas: dict[str, pa.Schema],
                rows_per_file: int) -> list:  # fmt: skip
    """``count`` sink actors, on the driver's node (no CPU reserved: like the governors they must
    not take a slot the stream's stages need; their work is what the driver did before, parse and
    write). On the driver's node whatever the root: a sink holds the list of files it wrote, which
    the run commits, so it must outlive any worker node (the run already dies with its driver),
    and a local root not declared shared is only the driver's disk. A local attempt is given the
    driver's absolute path (``file://`` too)."""
    import ray

    from crome_ray.ray_runtime import on_this_node

    uri = attempt.uri
    if not is_bucket_uri(uri):
        uri = attempt.path  # absolute: the driver's working folder resolved it
    actor = ray.remote(num_cpus=0, max_restarts=0)(TableSink).options(scheduling_strategy=on_this_node())
    sinks = [actor.remote(uri, storage_json, schemas, rows_per_file, f"s{i}") for i in range(count)]
    ray.get([s.__ray_ready__.remote() for s in sinks])
    return sinks


def forward(batch: pa.Table, sinks: list) -> pa.Table:
    """The stream's last stage: a block to its sink (by key), its tally on to the driver."""
    import ray

    if batch.num_rows == 0:
        return pa.Table.from_pylist([], schema=TALLY_SCHEMA)
    key = block_key(batch)
    sink = sinks[int(key[:8], 16) % len(sinks)]
    return pa.Table.from_pylist([{"tally": ray.get(sink.write.remote(key, batch))}], schema=TALLY_SCHEMA)
