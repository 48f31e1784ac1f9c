"""The lifecycle every step shares: skip, conflict or resume; tables and quarantine; manifest; commit.

A step (ingest, oracle, train, and the steps to come) declares its job, run name,
config and input runs, then writes tables into a fresh attempt and commits::

    step = Step(JOB, name, cfg, inputs={"train": pairs_run}, force=force)
    if not step.begin():
        return step.result          # committed by this same config and these same inputs
    pairs = step.table("pairs", PAIR_SCHEMA, cfg.rows_per_file)
    bad = step.quarantine(source="ultrafeedback", stage="ingest")
    ...
    result = step.commit(counts, **details)

The manifest has the same keys for every step: ``job``, ``run_name``, ``run_uri``,
``attempt``, ``fingerprint`` (of the config), ``config``, ``inputs`` (the URI,
fingerprint and attempt of every input run: lineage), ``counts``, ``tables``
(files and rows of each), ``versions``, ``timings`` and ``details`` (what only this
step reports).

When a committed run is redone:
- same config, same inputs: nothing to do (``begin`` returns False);
- same config, an input re-made since: redone (the old output is stale);
- another config: refused with ``RunConflictError`` unless forced.

A run is **stale** when an input it was made from has since been re-made or is no
longer committed; ``run_status`` says which and why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from crome_ray.config import StorageConfig
from crome_ray.records import QUARANTINE_SCHEMA, QuarantineRow, excerpt
from crome_ray.storage import (
    COMMIT_MARKER,
    MANIFEST,
    Folder,
    PartWriter,
    RunConflictError,
    RunFolder,
    UncommittedRunError,
    check_root,
    check_root_on_cluster,
    filesystem,
    library_versions,
)

QUARANTINE = "quarantine"


class StepConfig(Protocol):
    storage: StorageConfig

    def fingerprint(self) -> str: ...

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


@dataclass(frozen=True)
class InputRun:
    """One input of a step, as it was when the step read it."""

    name: str
    uri: str
    fingerprint: str | None
    attempt: str | None

    @classmethod
    def of(cls, name: str, run: RunFolder) -> InputRun:
        marker = run.marker() or {}
        return cls(name, run.uri, marker.get("fingerprint"), marker.get("attempt"))

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "fingerprint": self.fingerprint, "attempt": self.attempt}


@dataclass(frozen=True)
class StepResult:
    run: RunFolder
    skipped: bool  # True: a committed run with the same config and inputs was already there
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest["counts"]

    @property
    def details(self) -> dict[str, Any]:
        return self.manifest["details"]

    @property
    def output(self) -> Folder:
        """The committed attempt's folder (tables, model, metrics)."""
        return self.run.committed()


class Quarantine:
    """The quarantine table of a step: one row per bad input row or failed call, with its reason."""

    def __init__(self, writer: PartWriter, source: str, stage: str):
        self.writer, self.source, self.stage = writer, source, stage
        self.by_reason: Counter[str] = Counter()

    def put(
        self,
        location: str,
        reason: str,
        detail: str,
        raw: Any,
        *,
        source_id: str | None = None,
        stage: str | None = None,
    ) -> None:
        self.by_reason[reason] += 1
        row = QuarantineRow(
            source=self.source,
            location=location,
            stage=stage or self.stage,
            reason=reason,
            detail=detail,
            excerpt=excerpt(raw),
            source_id=source_id,
        )
        self.writer.add(row.to_row())

    def put_problem(self, problem: Any, *, stage: str | None = None) -> None:
        """A ``RowProblem`` (anything with ``location``, ``error.reason``, ``error.detail``, ``raw``)."""
        self.put(problem.location, problem.error.reason, problem.error.detail, problem.raw, stage=stage)

    @property
    def rows(self) -> int:
        return sum(self.by_reason.values())


@dataclass
class Step:
    """One run of one step: see the module docstring."""

    job: str
    run_name: str
    config: StepConfig
    inputs: Mapping[str, RunFolder] = field(default_factory=dict)
    force: bool = False
    resume: bool = False  # take up the newest uncommitted attempt of this config (training checkpoints)
    absolute: bool = False  # local roots made absolute (Ray Train workers run in a folder of their own)

    def __post_init__(self) -> None:
        storage = self.config.storage
        root = storage.root
        if self.absolute and "://" not in root:
            root = str(Path(root).expanduser().resolve())
        self.run = RunFolder.at(root, self.job, self.run_name, storage)
        self.fingerprint = self.config.fingerprint()
        self.input_runs = [InputRun.of(name, run) for name, run in self.inputs.items()]
        self.attempt: Folder | None = None
        self.resumed = False
        self.result: StepResult | None = None
        self.note: str | None = None  # why a committed run is being redone, for the user
        self._tables: dict[str, PartWriter] = {}
        self._written: dict[str, dict[str, Any]] = {}  # tables that others wrote into the attempt
        self._quarantine: Quarantine | None = None
        self._started = time.time()

    def begin(self) -> bool:
        """Decide: False when the committed run already is this one (``self.result`` holds it)."""
        check_root_on_cluster(self.config.storage)  # a local root on several nodes: refused first
        check_root(self.config.storage.root, self.config.storage)
        marker = self.run.marker()
        if marker is not None and not self.force:
            manifest = self.run.manifest()
            found = manifest.get("fingerprint")
            if found != self.fingerprint:
                raise RunConflictError(
                    f"run folder {self.run.uri} was committed by a different config (fingerprint "
                    f"{found}, this one {self.fingerprint}): choose another run name, or force to "
                    "overwrite (the committed run stays until the new one commits)"
                )
            changed = _changed_inputs(manifest.get("inputs") or {}, self.input_runs)
            if not changed:
                self.result = StepResult(self.run, True, manifest)
                return False
            self.note = "redoing: " + "; ".join(changed)
        if self.resume and not self.force:
            self.attempt = self.run.resumable_attempt(self.fingerprint)
            self.resumed = self.attempt is not None
        self._started = time.time()
        return True

    @property
    def folder(self) -> Folder:
        """This run's attempt folder, made on first use: a step that fails its checks before
        writing anything (a wrong model id, say) leaves no trace."""
        if self.result is not None and self.result.skipped:
            raise RuntimeError("this step was skipped: its committed run is step.result.run")
        if self.attempt is None:
            self.attempt = self.run.new_attempt(self.fingerprint)
        return self.attempt

    def table(self, name: str, schema: pa.Schema, rows_per_file: int = 50_000) -> PartWriter:
        writer = PartWriter(self.folder, name, schema, rows_per_file)
        self._tables[name] = writer
        return writer

    def written_table(self, name: str, schema: pa.Schema, files: list[str], rows: int) -> None:
        """A table whose files others wrote into this attempt (the augmentation's sink actors):
        the manifest lists them; with none, the table gets one empty file with its schema."""
        if not files:
            self.table(name, schema)
            return
        self._written[name] = {"files": sorted(files), "rows": rows}

    def quarantine(self, *, source: str, stage: str, rows_per_file: int = 50_000) -> Quarantine:
        if self._quarantine is None:
            self._quarantine = Quarantine(
                self.table(QUARANTINE, QUARANTINE_SCHEMA, rows_per_file), source, stage
            )
        return self._quarantine

    def commit(self, counts: Mapping[str, Any], **details: Any) -> StepResult:
        """Close the tables, write the manifest into the attempt, then switch the run to it."""
        folder = self.folder
        tables = {}
        for name, writer in self._tables.items():
            tables[name] = {"files": writer.close(), "rows": writer.rows}
        for name, entry in self._written.items():
            if name in tables:
                raise ValueError(f"table {name!r} has a writer of its own and files written by others")
            tables[name] = entry
        finished = time.time()
        manifest = {
            "job": self.job,
            "run_name": self.run_name,
            "run_uri": self.run.uri,
            "attempt": folder.uri.rsplit("/", 1)[-1],
            "fingerprint": self.fingerprint,
            "config": self.config.model_dump(mode="json"),
            "inputs": {i.name: i.as_dict() for i in self.input_runs},
            "counts": dict(counts),
            "tables": tables,
            "versions": library_versions(),
            "timings": {
                "started_at": self._started,
                "finished_at": finished,
                "seconds": round(finished - self._started, 3),
            },
            "details": details,
        }
        self.run.commit(folder, manifest)
        self.result = StepResult(self.run, False, manifest)
        return self.result


def _changed_inputs(recorded: Mapping[str, Any], now: list[InputRun]) -> list[str]:
    out = []
    current = {i.name: i for i in now}
    for name in sorted(set(recorded) | set(current)):
        old, new = recorded.get(name), current.get(name)
        if old is None:
            out.append(f"new input {name} ({new.uri})")
        elif new is None:
            out.append(f"input {name} ({old['uri']}) is no longer used")
        elif (old["uri"], old["fingerprint"], old["attempt"]) != (new.uri, new.fingerprint, new.attempt):
            out.append(f"input {name} ({new.uri}) was re-made since")
    return out


# --- status of committed runs ------------------------------------------------------------------

State = Literal["committed", "stale", "incomplete"]


@dataclass(frozen=True)
class RunStatus:
    uri: str
    job: str
    name: str
    state: State
    reasons: tuple[str, ...] = ()
    rows: Mapping[str, int] = field(default_factory=dict)
    committed_at: float | None = None  # epoch seconds
    uncommitted_attempts: int = 0


def stale_reasons(manifest: Mapping[str, Any], storage: StorageConfig | None = None) -> list[str]:
    """Why a committed run no longer follows from its inputs (empty: it does)."""
    out = []
    for name, rec in sorted((manifest.get("inputs") or {}).items()):
        marker = RunFolder.from_uri(rec["uri"], storage).marker()
        if marker is None:
            out.append(f"input {name} ({rec['uri']}) is no longer committed")
        elif marker.get("fingerprint") != rec.get("fingerprint"):
            out.append(
                f"input {name} ({rec['uri']}) was re-made with another config "
                f"(fingerprint {rec.get('fingerprint')} → {marker.get('fingerprint')})"
            )
        elif marker.get("attempt") != rec.get("attempt"):
            was, now = rec.get("attempt"), marker.get("attempt")
            out.append(f"input {name} ({rec['uri']}) was re-made (attempt {was} → {now})")
    return out


def table_rows(manifest: Mapping[str, Any], folder: Folder | None = None) -> dict[str, int]:
    """Rows per table from the manifest (counted from the files' footers for older manifests)."""
    out = {}
    for name, entry in (manifest.get("tables") or {}).items():
        if isinstance(entry, dict):
            out[name] = int(entry.get("rows", 0))
        elif folder is not None:  # a list of files, as manifests before runs.py had
            out[name] = sum(
                pq.ParquetFile(folder.fs.open(folder.file(f), "rb")).metadata.num_rows for f in entry
            )
    return out


def run_status(run: RunFolder, storage: StorageConfig | None = None) -> RunStatus:
    job = run.uri.rstrip("/").rsplit("/", 2)[-2]
    try:
        folder = run.committed()
    except UncommittedRunError:
        return RunStatus(
            run.uri,
            job,
            run.name,
            "incomplete",
            ("never committed",),
            uncommitted_attempts=len(run.attempt_ids()),
        )
    committed = folder.path.rsplit("/", 1)[-1]
    manifest = folder.read_json(MANIFEST)
    reasons = stale_reasons(manifest, storage)
    timings = manifest.get("timings") or {}
    return RunStatus(
        run.uri,
        job,
        run.name,
        "stale" if reasons else "committed",
        tuple(reasons),
        table_rows(manifest, folder),
        timings.get("finished_at") or timings.get("started_at"),
        sum(1 for a in run.attempt_ids() if a != committed),
    )


def list_runs(root: str, storage: StorageConfig | None = None) -> list[RunStatus]:
    """Every run folder under ``root`` (``<root>/<job>/<run>/``), with its status."""
    fs, path = filesystem(root, storage)
    if not fs.exists(path):
        return []
    out = []
    for job_dir in sorted(fs.ls(path, detail=True), key=lambda e: e["name"]):
        if job_dir["type"] != "directory":
            continue
        job = job_dir["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in sorted(fs.ls(job_dir["name"], detail=True), key=lambda e: e["name"]):
            if entry["type"] != "directory":
                continue
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            run = RunFolder.at(root, job, name, storage)
            if not _looks_like_run(run):
                continue
            out.append(run_status(run, storage))
    return out


def _looks_like_run(run: RunFolder) -> bool:
    return (
        run.fs.exists(run.path + "/" + COMMIT_MARKER)
        or bool(run.attempt_ids())
        or run.fs.exists(run.path + "/" + MANIFEST)
    )
