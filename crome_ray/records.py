"""Every table crome-ray writes: Arrow schemas plus the dataclasses that fill them.

A preference pair says ``chosen`` is better than ``rejected`` for ``prompt``
(``label="chosen"``) or that neither is better (``label="tie"``). ``kind`` says
where it came from: ``original`` rows come from a source data set; later stages
add their own kinds (counterfactual rewrites, neutral pairs).

A quarantine row keeps a bad input row with the reason it was set aside, so no
input is ever silently dropped. The augmentation writes two more tables beside its pairs:
``rejected`` (a rewrite written but not used, and why) and ``controls`` (the verifier's
verdicts on probes whose right verdict is Fail).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

PAIRS_SCHEMA_VERSION = 1
LABELS = ("chosen", "tie")
EXCERPT_CHARS = 300

PAIR_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("score_chosen", pa.float64()),
        pa.field("score_rejected", pa.float64()),
        pa.field("metadata", pa.string()),  # JSON object: whatever else the source had
        pa.field("schema_version", pa.int16(), nullable=False),
    ],
    metadata={"crome_ray.table": "pairs", "crome_ray.schema_version": str(PAIRS_SCHEMA_VERSION)},
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("location", pa.string(), nullable=False),  # file:line, file#row, or file
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # a stable code, see Reason
        pa.field("detail", pa.string(), nullable=False),  # a sentence for a person
        pa.field("excerpt", pa.string(), nullable=False),
    ],
    metadata={"crome_ray.table": "quarantine"},
)


class Reason:
    """Stable quarantine reason codes (tables are grouped and counted by these)."""

    MISSING_FIELD = "missing_field"
    EMPTY_FIELD = "empty_field"
    WRONG_TYPE = "wrong_type"
    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    TEXT_TOO_LONG = "text_too_long"
    IDENTICAL_RESPONSES = "identical_responses"
    DUPLICATE_PAIR = "duplicate_pair"
    INVALID_LABEL = "invalid_label"
    BAD_MESSAGES = "bad_messages"
    PROMPT_MISMATCH = "prompt_mismatch"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNREADABLE_FILE = "unreadable_file"
    UNKNOWN_FORMAT = "unknown_format"
    TOO_FEW_COMPLETIONS = "too_few_completions"
    UNKNOWN_PROMPT = "unknown_prompt"


def pair_id(prompt: str, chosen: str, rejected: str, member: str | None = None) -> str:
    """Stable id from content: the same pair gets the same id in any run. ``member``: the
    benchmark group member a pair is (``metadata["member"]``: a RewardBench 2 row or RM-Bench
    prompt, and the two answers' positions in it), for the same two texts can be two members
    (a Ties prompt's ``ref`` and ``tied`` rows; a row holding one answer twice) and each group
    is scored whole."""
    parts = [prompt, chosen, rejected] if member is None else [prompt, chosen, rejected, member]
    digest = hashlib.sha256(json.dumps(parts).encode("utf-8"))
    return digest.hexdigest()[:20]


def excerpt(raw: Any, limit: int = EXCERPT_CHARS) -> str:
    if isinstance(raw, bytes):
        text = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(raw)
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    source: str
    source_id: str
    label: str = "chosen"
    kind: str = "original"
    subset: str | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = PAIRS_SCHEMA_VERSION

    @property
    def pair_id(self) -> str:
        # a benchmark group's member (its row and the two answers' positions): two answers of
        # one row may be the same texts as another pair's, and every member is scored
        member = self.metadata.get("member") if isinstance(self.metadata, dict) else None
        return pair_id(self.prompt, self.chosen, self.rejected, None if member is None else str(member))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PreferencePair:
        """A row of a pairs table (``to_row``'s) back as a pair; other columns are left out."""
        meta = row.get("metadata")
        return cls(
            **{f: row[f] for f in _ROW_FIELDS if f in row and f != "metadata"},
            metadata=json.loads(meta) if isinstance(meta, str) and meta else {},
        )

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["pair_id"] = self.pair_id
        row["metadata"] = json.dumps(self.metadata, sort_keys=True, default=str)
        return row


_ROW_FIELDS = tuple(f.name for f in fields(PreferencePair))


@dataclass(frozen=True)
class QuarantineRow:
    source: str
    location: str
    stage: str
    reason: str
    detail: str
    excerpt: str
    source_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def pairs_table(pairs: list[PreferencePair]) -> pa.Table:
    return pa.Table.from_pylist([p.to_row() for p in pairs], schema=PAIR_SCHEMA)


# The augmentation's training table: the pairs columns first (what training reads), then where
# each pair came from. ``chosen`` is response A and ``rejected`` response B: label "chosen" says
# A ≻ B, label "tie" says neither is better; ``kind`` is one of ``augment.kinds.KIND_NAMES``.
AUGMENTED_PAIR_SCHEMA = pa.schema(
    [
        *[PAIR_SCHEMA.field(name) for name in PAIR_SCHEMA.names],
        pa.field("attribute", pa.string()),  # the rubric attribute a causal pair changes
        pa.field("backend", pa.string()),  # what wrote the rewrite (null: no oracle call)
        pa.field("model", pa.string()),
        pa.field("cost_usd", pa.float64()),  # what the pair's oracle calls cost (cache hits: 0)
        pa.field("request_keys", pa.list_(pa.string())),  # the oracle cache keys behind the pair
        pa.field("iqn_method", pa.string()),  # how an IQN pair's request was chosen
        pa.field("iqn_similarity", pa.float64()),  # its similarity to the pair's own request
        pa.field("leakage", pa.string()),  # JSON: augment.leakage.Leakage of the rewrite
        pa.field("baseline_p", pa.float64()),  # P_base(B ≻ A) from the baseline filter
    ],
    metadata={"crome_ray.table": "pairs", "crome_ray.schema_version": str(PAIRS_SCHEMA_VERSION)},
)

# The augmentation's other tables: the rewrites written but not used, and the verifier's
# verdicts on its control probes.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # degrade | upgrade | can | para
        pa.field("attribute", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # parse | checks | verify | leakage
        pa.field("check", pa.string()),  # the code check that refused it (stage checks)
        pa.field("reason", pa.string(), nullable=False),
        pa.field("rewrite", pa.string()),
        pa.field("leakage", pa.string()),  # JSON, when measured
        pa.field("backend", pa.string()),
        pa.field("model", pa.string()),
    ],
    metadata={"crome_ray.table": "augment_rejected"},
)
CONTROL_SCHEMA = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("verifier", pa.string()),  # causal | neutral_can | neutral_para: the verifier it calibrates
        pa.field("probe", pa.string(), nullable=False),  # original | unrelated | unchanged | other_answer
        pa.field("passed", pa.bool_()),  # null: no verdict (the call failed)
        pa.field("reason", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("model", pa.string()),
    ],
    metadata={"crome_ray.table": "augment_controls"},
)
