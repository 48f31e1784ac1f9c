"""Read source files record by record, so one bad line never costs the whole file.

JSON Lines are split and decoded line by line (a non-UTF-8 or cut-off line becomes
a problem with its line number); CSV is decoded with ``surrogateescape`` so a row
with bad bytes can be singled out; JSON arrays and Parquet are read whole or per
row group, and an unreadable file becomes one problem naming the file. pyarrow's
own JSON/CSV readers fail a whole file on the first bad row, which is why the
line splitting is done here.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator

import pyarrow.parquet as pq

from crome_ray.config import StorageConfig
from crome_ray.data.formats import RowError, RowProblem, SourceRecord, has_surrogates
from crome_ray.records import Reason
from crome_ray.storage import filesystem, iter_files

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")

csv.field_size_limit(sys.maxsize)  # long answers are judged by max_text_chars, not by csv


def read_source(uri: str, storage: StorageConfig | None = None) -> Iterator[SourceRecord | RowProblem]:
    for file_uri in iter_files(uri, storage, SUFFIXES):
        fs, path = filesystem(file_uri, storage)
        name = path.rsplit("/", 1)[-1]
        try:
            if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
                yield from _read_jsonl(fs, path, name)
            elif name.endswith((".json", ".json.gz")):
                yield from _read_json(fs, path, name)
            elif name.endswith(".parquet"):
                yield from _read_parquet(fs, path, name)
            elif name.endswith((".csv", ".csv.gz")):
                yield from _read_csv(fs, path, name)
            else:
                err = RowError(
                    Reason.UNREADABLE_FILE,
                    f"{name}: unsupported file type (use {', '.join(SUFFIXES)})",
                )
                yield RowProblem(path, err)
        except (OSError, ValueError, EOFError) as e:
            # A file that breaks mid-read (a truncated .gz or Parquet) costs only its rest.
            yield RowProblem(path, RowError(Reason.UNREADABLE_FILE, f"{name}: {type(e).__name__}: {e}"))


def _read_jsonl(fs, path: str, name: str) -> Iterator[SourceRecord | RowProblem]:
    with fs.open(path, "rb", compression="infer") as f:
        for lineno, raw in enumerate(f, start=1):
            loc = f"{name}:{lineno}"
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RowProblem(
                    loc, RowError(Reason.INVALID_UTF8, f"byte {e.start} is not valid UTF-8"), line
                )
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                cut = "" if raw.endswith(b"\n") else " (the file ends inside this line: truncated?)"
                yield RowProblem(
                    loc, RowError(Reason.INVALID_JSON, f"{e.msg} at column {e.colno}{cut}"), line
                )
                continue
            if not isinstance(value, dict):
                err = RowError(
                    Reason.WRONG_TYPE, f"a line must hold a JSON object, got {type(value).__name__}"
                )
                yield RowProblem(loc, err, line)
                continue
            yield SourceRecord(path, loc, value)


def _read_json(fs, path: str, name: str) -> Iterator[SourceRecord | RowProblem]:
    with fs.open(path, "rb", compression="infer") as f:
        data = f.read()
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        yield RowProblem(name, RowError(Reason.UNREADABLE_FILE, f"{name} is not a JSON document: {e}"), data)
        return
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        yield RowProblem(
            name,
            RowError(Reason.UNREADABLE_FILE, f"{name} must hold a JSON array of objects"),
            data,
        )
        return
    for i, item in enumerate(value):
        loc = f"{name}#{i}"
        if isinstance(item, dict):
            yield SourceRecord(path, loc, item)
        else:
            yield RowProblem(
                loc,
                RowError(Reason.WRONG_TYPE, f"item must be an object, got {type(item).__name__}"),
                item,
            )


def _read_parquet(fs, path: str, name: str) -> Iterator[SourceRecord | RowProblem]:
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for item in batch.to_pylist():
                yield SourceRecord(path, f"{name}#{row}", item)
                row += 1


def _read_csv(fs, path: str, name: str) -> Iterator[SourceRecord | RowProblem]:
    with fs.open(path, "rb", compression="infer") as f:
        text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        for i, row in enumerate(reader, start=1):
            loc = f"{name}#{i}"
            if None in row:
                err = RowError(Reason.WRONG_TYPE, f"row has {len(row[None])} more fields than the header")
                yield RowProblem(loc, err, row)
                continue
            bad = [k for k, v in row.items() if isinstance(v, str) and has_surrogates(v)]
            if bad:
                yield RowProblem(
                    loc, RowError(Reason.INVALID_UTF8, f"field {bad[0]!r} is not valid UTF-8"), row
                )
                continue
            yield SourceRecord(path, loc, row)
