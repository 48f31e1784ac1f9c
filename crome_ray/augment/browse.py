"""Reading what an augmentation made, a sample at a time (an adapter: the run's Parquet through
pyarrow): the rows ``crome-ray inspect`` prints side by side.

``samples`` reads one table of a committed augmentation run (``pairs``, ``rejected`` or
``left_out``), keeps the rows of one kind if asked, and draws ``n`` of them at random with a
fixed seed (the same command shows the same rows). A kind may be named either way: as the
pairs table names it (``neutral_can``) or as the rejected table does (its oracle task,
``can``). What decided each row is said in words: for a pair, the checks it passed and the
verifier, if it had one; for a rejected rewrite, the stage, the check and the reason. A
rejected row keeps the rewrite, not the text it rewrote: that comes from the run's input
pairs (its lineage), read for the sampled source ids only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from crome_ray.augment.errors import AugmentError
from crome_ray.augment.kinds import BY_NAME, BY_TASK, KIND_NAMES
from crome_ray.config import StorageConfig
from crome_ray.storage import RunFolder

TABLES = ("pairs", "rejected", "left_out")


@dataclass(frozen=True)
class Sample:
    kind: str
    label: str
    prompt: str
    a: str
    b: str
    decided: str  # the check or verdict that decided the row
    source_id: str


def _kind_filter(table: str, kind: str | None) -> str | None:
    """The kind as ``table`` names it (rejected rows name their oracle task)."""
    if kind is None:
        return None
    if kind not in BY_NAME and kind not in BY_TASK:
        raise AugmentError(
            f"no kind {kind!r}: one of {', '.join(KIND_NAMES)} (or a task: {', '.join(BY_TASK)})"
        )
    if table == "rejected":
        return BY_NAME[kind].task if kind in BY_NAME else kind
    return BY_TASK[kind].name if kind in BY_TASK else kind


def samples(
    run: RunFolder,
    table: str = "pairs",
    kind: str | None = None,
    n: int = 5,
    seed: int = 0,
    storage: StorageConfig | None = None,
) -> tuple[list[Sample], int]:
    """``n`` rows of ``table`` (of ``kind``) at random, and how many there were. ``storage``:
    how to reach the run's input (its endpoint), as the run itself was reached."""
    if table not in TABLES:
        raise AugmentError(f"no table {table!r} to inspect: one of {', '.join(TABLES)}")
    manifest = run.manifest()  # a committed run, or a clear error
    if manifest.get("job") != "augment":
        raise AugmentError(f"{run.uri} is a {manifest.get('job')} run: inspect reads augmentation runs")
    if table not in manifest.get("tables", {}):
        raise AugmentError(f"{run.uri} has no {table} table (committed before the quality gate existed)")
    data = run.read_table(table)
    if (wanted := _kind_filter(table, kind)) is not None:
        data = data.filter(pc.equal(data["kind"], wanted))
    total = data.num_rows
    picked = sorted(random.Random(seed).sample(range(total), min(n, total)))
    rows = data.take(picked).to_pylist() if picked else []
    if table == "rejected":
        sources = _input_texts(manifest, {r["source_id"] for r in rows}, storage)
        return [_rejected(r, sources.get(r["source_id"])) for r in rows], total
    return [_pair(r) for r in rows], total


def _input_texts(
    manifest: dict[str, Any], ids: set[str], storage: StorageConfig | None
) -> dict[str, dict[str, Any]]:
    """The input pairs of ``ids`` (the original pair of each example), from the run's lineage."""
    uri = manifest.get("inputs", {}).get("pairs", {}).get("uri")
    if not ids or not uri:
        return {}
    data = RunFolder.from_uri(uri, storage).read_table("pairs")
    data = data.filter(pc.is_in(data["source_id"], value_set=pa.array(sorted(ids))))
    return {r["source_id"]: r for r in data.select(["source_id", "prompt", "chosen", "rejected"]).to_pylist()}


def _pair(r: dict[str, Any]) -> Sample:
    keys = len(r.get("request_keys") or [])
    if r["kind"] in ("original", "neutral_iqn", "rrm_prefer", "rrm_tie"):
        decided = "no oracle call" if r["kind"] != "original" else "the source pair"
    else:
        decided = "passed the code checks" + (" and the verifier" if keys >= 2 else " (no verifier)")
        if r.get("baseline_p") is not None:
            decided += f"; baseline P(B ≻ A) {r['baseline_p']:.2f}"
    if r.get("attribute"):
        decided += f"; attribute: {r['attribute']}"
    if r.get("backend"):
        decided += f"; written by {r['backend']} {r['model']}"
    return Sample(r["kind"], r["label"], r["prompt"], r["chosen"], r["rejected"], decided, r["source_id"])


def _rejected(r: dict[str, Any], source: dict[str, Any] | None) -> Sample:
    """A refused rewrite as the pair it would have made: A the text the pair would set it
    against (from the input), B the rewrite (an upgrade's rewrite would have been A)."""
    kind = BY_TASK[r["kind"]].name if r["kind"] in BY_TASK else r["kind"]
    where = r["stage"] + (f" ({r['check']})" if r.get("check") else "")
    decided = f"refused at {where}: {r['reason']}"
    if r.get("backend"):
        decided += f"; written by {r['backend']} {r['model']}"
    rewrite = r.get("rewrite") or ""
    other, prompt = "(the input pair is not readable)", r.get("task_id", "")
    if source is not None:
        prompt = source["prompt"]
        other = source["rejected"] if kind == "causal_upgrade" else source["chosen"]
    a, b = (rewrite, other) if kind == "causal_upgrade" else (other, rewrite)
    return Sample(kind, "rejected", prompt, a, b, decided, r["source_id"])
