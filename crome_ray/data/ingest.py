"""Ingest: one source data set -> a committed run folder with ``pairs`` and ``quarantine``.

Runs in one process (the driver of ``jobs/ingest.py``): it is a single streaming
pass of parsing and hashing, seconds for UltraFeedback's 61k pairs, so a Ray Data
pipeline would only add start-up. The tables it writes are Parquet that Ray Data
reads in parallel for the expensive stages after it.

Per record: read (``readers``) -> parse (``formats``) -> tie policy -> de-duplicate
by content id -> write. Every record that gives no pair is either quarantined with
its reason or, when it is not bad input (a dropped score tie, an unpairable XSTest
prompt), counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from crome_ray.data.config import IngestConfig
from crome_ray.data.formats import (
    DEFAULT_NAMES,
    MEANINGFUL_FIELDS,
    ROW_PARSERS,
    RowContext,
    RowError,
    RowProblem,
    SourceRecord,
    detect_format,
    unread_fields,
    xstest_pairs,
)
from crome_ray.data.readers import read_source
from crome_ray.errors import CromeError
from crome_ray.records import PAIR_SCHEMA, PAIRS_SCHEMA_VERSION, PreferencePair, Reason
from crome_ray.runs import Step, StepResult
from crome_ray.storage import check_root, is_bucket_uri

JOB = "ingest"
STAGE = "ingest"
Progress = Callable[["IngestCounts"], None]


class IngestError(CromeError, RuntimeError):
    """The ingest produced nothing usable; the message says what the rows looked like."""


@dataclass
class IngestCounts:
    records_read: int = 0
    pairs_written: int = 0
    ties_kept: int = 0
    ties_dropped: int = 0
    unpaired: int = 0
    quarantined: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "pairs_written": self.pairs_written,
            "ties_kept": self.ties_kept,
            "ties_dropped": self.ties_dropped,
            "unpaired": self.unpaired,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
        }


IngestResult = StepResult


def source_name(src: Any) -> str:
    """The data set's name (each pair's ``source``, and its subset when it has none): as set;
    else the format's (``ultrafeedback``); with ``format: auto``, the file's or folder's own name
    (``my_heldout.jsonl`` → ``my_heldout``), so a user's set reads as itself in the report."""
    if src.name:
        return src.name
    if src.format != "auto":
        return DEFAULT_NAMES.get(src.format, "source")
    last = src.path.rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"(\.(jsonl|ndjson|json|parquet|csv))?(\.gz)?$", "", last)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "", stem).strip(".-")
    return stem or "source"


def default_run_name(cfg: IngestConfig) -> str:
    return f"{source_name(cfg.source)}-{cfg.fingerprint()[:8]}"


def run_ingest(cfg: IngestConfig, *, force: bool = False, progress: Progress | None = None) -> IngestResult:
    if is_bucket_uri(cfg.source.path):
        check_root(cfg.source.path, cfg.storage)
    step = Step(JOB, cfg.run_name or default_run_name(cfg), cfg, force=force)
    if not step.begin():
        return step.result

    counts = IngestCounts()
    pairs = step.table("pairs", PAIR_SCHEMA, cfg.rows_per_file)
    name = source_name(cfg.source)
    quarantine = step.quarantine(source=name, stage=STAGE, rows_per_file=cfg.rows_per_file)
    seen: dict[str, str] = {}

    def put_problem(p: RowProblem) -> None:
        if not p.bad:
            counts.unpaired += 1
            return
        counts.quarantined[p.error.reason] += 1
        quarantine.put_problem(p)

    for item in _pairs_and_problems(cfg, name, counts):
        if isinstance(item, RowProblem):
            put_problem(item)
            continue
        pair = item
        if pair.label == "chosen" and _is_score_tie(pair):
            if cfg.source.ties == "drop":
                counts.ties_dropped += 1
                continue
            pair = replace(pair, label="tie")
        first = seen.get(pair.pair_id)
        if first is not None:
            err = RowError(
                Reason.DUPLICATE_PAIR,
                f"same prompt, chosen and rejected as the pair with source_id {first!r} "
                f"(pair_id {pair.pair_id})",
            )
            put_problem(RowProblem(pair.source_id, err, pair.to_row()))
            continue
        seen[pair.pair_id] = pair.source_id
        pairs.add(pair.to_row())
        counts.pairs_written += 1
        counts.ties_kept += pair.label == "tie"
        if progress and counts.pairs_written % 1000 == 0:
            progress(counts)
        if cfg.source.limit and counts.pairs_written >= cfg.source.limit:
            break

    if progress:
        progress(counts)
    if counts.pairs_written == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in counts.quarantined.most_common(3)) or "none"
        pairs.close()
        quarantine.writer.close()
        raise IngestError(
            f"no pairs from {cfg.source.path!r} as format {cfg.source.format!r} "
            f"({counts.records_read} records read; quarantined by reason: {reasons}). Check "
            f"source.format; the quarantine table is in the uncommitted attempt {step.folder.uri}"
        )
    return step.commit(counts.as_dict(), schema_version={"pairs": PAIRS_SCHEMA_VERSION})


def _pairs_and_problems(
    cfg: IngestConfig, source_name: str, counts: IngestCounts
) -> Iterator[PreferencePair | RowProblem]:
    """Parse every record of the source with the configured (or detected) format."""
    src = cfg.source

    def ctx(location: str, file: str = "") -> RowContext:
        return RowContext(
            source=source_name,
            location=location,
            file=file,
            max_text_chars=src.max_text_chars,
            subset=src.subset,
            binarize=src.binarize,
        )

    records = _counted(read_source(src.path, cfg.storage), counts)
    if src.format == "xstest":
        good = []
        for item in records:
            if isinstance(item, RowProblem):
                yield item
            else:
                good.append(item)
        yield from xstest_pairs(good, ctx("xstest"))
        return

    fmt = None if src.format == "auto" else src.format
    for item in records:
        if isinstance(item, RowProblem):
            yield item
            continue
        if fmt is None:
            fmt = detect_format(item.value)
            if fmt is None:
                err = RowError(Reason.UNKNOWN_FORMAT, f"fields {sorted(item.value)} match no known format")
                yield RowProblem(item.location, err, item.value)
                continue
        unread = unread_fields(fmt, item.value)
        if unread:  # the wrong format for this file, not a bad row: stop before anything is committed
            name = unread[0]
            reader = MEANINGFUL_FIELDS[name][0]
            raise IngestError(
                f"{item.location}: field {name!r} = {item.value[name]!r} changes what the row means, but "
                f"format {fmt!r} does not read it (it would be dropped without a word). Use "
                f"source.format={reader} (or auto), which reads {name!r}"
            )
        try:
            yield from ROW_PARSERS[fmt](item.value, ctx(item.location, item.file))
        except RowError as e:
            yield RowProblem(item.location, e, item.value)


def _counted(records: Iterator[SourceRecord | RowProblem], counts: IngestCounts) -> Iterator:
    for r in records:
        counts.records_read += 1
        yield r


def _is_score_tie(pair: PreferencePair) -> bool:
    return pair.score_chosen is not None and pair.score_chosen == pair.score_rejected
