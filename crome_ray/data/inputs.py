"""Where a job's pairs come from: a committed run folder, or a source file ingested first.

Training, the augmentation, the sweep and the evaluation all take "pairs" as either a
committed ingest/augmentation run or a plain source (a file, folder or glob, any ingest
format). ``pairs_run`` gives the committed run in both cases: a source is ingested into
``<root>/ingest/`` (its bad rows quarantined there), once; a run folder that was never
committed is refused rather than read half-written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crome_ray.config import StorageConfig
from crome_ray.data.config import IngestConfig, SourceConfig
from crome_ray.errors import CromeError
from crome_ray.storage import RunFolder, is_bucket_uri, split_uri


class InputError(CromeError):
    """The pairs a job was pointed at cannot be used; the message says why and what to do."""


def pairs_run(
    uri: str, storage: StorageConfig, limit: int | None = None, log: Callable[[str], None] = lambda _: None
) -> RunFolder:
    """The committed run holding the pairs at ``uri``: that run, or a new ingest of a source file."""
    return source_run(SourceConfig(path=uri, format="auto", limit=limit), storage, log)


def source_run(src: SourceConfig, storage: StorageConfig, log: Callable[[str], None]) -> RunFolder:
    """The committed run at ``src.path``, or a new ingest of the source ``src`` describes."""
    run = RunFolder.from_uri(src.path, storage)
    if run.is_committed():
        return run
    if run.fs.isdir(run.path) and (run.attempt_ids() or run.fs.exists(f"{run.path}/pairs")):
        raise InputError(
            f"{src.path} is a run folder that was never committed: re-run the step that writes it"
        )
    from crome_ray.data.ingest import run_ingest

    result = run_ingest(IngestConfig(source=src, storage=storage))
    log(f"ingested {src.path} → {result.run.uri} ({'already there' if result.skipped else 'new'})")
    return result.run


def pair_files(run: RunFolder) -> list[str]:
    """URIs of the committed pairs table's Parquet files (absolute local paths, s3:// or gs://)."""
    files = run.table_files("pairs")
    if not files:
        raise InputError(f"{run.uri} has no pairs")
    if is_bucket_uri(run.uri):
        proto = split_uri(run.uri)[0]
        return [f"{proto}://{f}" for f in files]
    return [str(Path(f).resolve()) for f in files]
