"""Pure parsers: one source record (a dict) -> preference pairs, or a RowError saying why not.

Formats:
- ``ultrafeedback_binarized``: ``prompt`` (optional), ``chosen``, ``rejected`` as plain
  strings or as chat-message lists (HuggingFaceH4 / trl-lib layouts); scores as
  ``score_chosen``/``score_rejected`` or under ``metadata``.
- ``ultrafeedback_raw``: openbmb/UltraFeedback (``instruction`` + four rated
  ``completions``), binarized by ``RawBinarizeConfig``: the best score is chosen; the
  rejected one is a seeded random pick among the rest (HuggingFaceH4's rule) or the
  lowest. The seed mixes in the prompt, so the pick does not depend on row order.
- ``rewardbench``: ``prompt, chosen, rejected, subset, id``.
- ``llmbar``: ``input, output_1, output_2, label`` (1 or 2 names the better output).
- ``pairs``: crome-ray's own pairs table (``records.PAIR_SCHEMA``), any schema version
  this code knows.
- ``rewardbench2``: allenai/reward-bench-2 (``id, prompt, chosen, rejected, num_correct,
  total_completions, subset``; ``chosen`` and ``rejected`` are lists). A row is one benchmark
  group: its first chosen answer against each rejected one (best-of-4 is scored from these),
  and for ``Ties`` every chosen answer too (``evaluate.benchmarks`` scores the group whole).
- ``rm_bench``: THU-KEG/RM-Bench (``id, prompt, chosen, rejected``: three styles each,
  concise, detailed plain, detailed markdown): the 3×3 pairs of a prompt, one group. The
  domain (the subset) is the row's ``domain``, else the file's name (``chat_filtered.json``).
- ``hh_rlhf``: Anthropic/hh-rlhf (``chosen, rejected``: whole ``Human:``/``Assistant:``
  transcripts): the prompt is the dialogue the two share, up to its last ``Assistant:``, and
  the answers are the two last turns. The subset is the file's folder (``harmless-base``).
- ``xstest``: see ``xstest_pairs``; it joins several files, so it is not row-wise.

A benchmark group's pairs carry ``metadata``: ``benchmark``, ``group`` (the row's id; also in
the pair's id, since one pair of texts can belong to two groups) and the positions of their
two answers in the row.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from crome_ray.data.config import RawBinarizeConfig
from crome_ray.records import LABELS, PAIRS_SCHEMA_VERSION, PreferencePair, Reason

DEFAULT_NAMES = {
    "ultrafeedback_binarized": "ultrafeedback",
    "ultrafeedback_raw": "ultrafeedback",
    "rewardbench": "rewardbench",
    "llmbar": "llmbar",
    "xstest": "xstest",
    "pairs": "pairs",
    "rewardbench2": "rewardbench2",
    "rm_bench": "rm_bench",
    "hh_rlhf": "hh_rlhf",
}


class RowError(ValueError):
    """A source row that cannot become a pair; ``reason`` is a ``records.Reason`` code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class RowContext:
    source: str
    location: str
    max_text_chars: int = 100_000
    subset: str | None = None
    binarize: RawBinarizeConfig = field(default_factory=RawBinarizeConfig)
    file: str = ""  # the record's file, its whole path (a format may read a subset off it)


def require(rec: dict[str, Any], key: str) -> Any:
    if key not in rec or rec[key] is None:
        present = ", ".join(sorted(map(str, rec))) or "none"
        raise RowError(Reason.MISSING_FIELD, f"field {key!r} is missing (fields present: {present})")
    return rec[key]


# zero-width and format characters that str.strip() keeps: a text of only these shows nothing
INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad\u034f\u180e]")


def text_field(value: Any, name: str, ctx: RowContext) -> str:
    if not isinstance(value, str):
        raise RowError(Reason.WRONG_TYPE, f"field {name!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(Reason.EMPTY_FIELD, f"field {name!r} is empty")
    if not INVISIBLE.sub("", value).strip():
        raise RowError(Reason.EMPTY_FIELD, f"field {name!r} holds only invisible characters ({value[:8]!r})")
    if len(value) > ctx.max_text_chars:
        raise RowError(
            Reason.TEXT_TOO_LONG,
            f"field {name!r} has {len(value):,} characters; the limit is {ctx.max_text_chars:,} "
            "(source.max_text_chars)",
        )
    if has_surrogates(value):
        raise RowError(Reason.INVALID_UTF8, f"field {name!r} holds bytes that are not valid UTF-8")
    return value


def has_surrogates(text: str) -> bool:
    """True if ``text`` holds undecodable bytes (kept as surrogates by ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def score_field(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(Reason.WRONG_TYPE, f"field {name!r} must be a number, got {value!r}")
    if math.isnan(value):
        return None
    return float(value)


def flat_pair(rec: dict[str, Any], ctx: RowContext, **kw: Any) -> PreferencePair:
    """A pair from a record that holds ``prompt``, ``chosen`` and ``rejected`` as fields."""
    return make_pair(ctx, require(rec, "prompt"), require(rec, "chosen"), require(rec, "rejected"), **kw)


def make_pair(
    ctx: RowContext,
    prompt: Any,
    chosen: Any,
    rejected: Any,
    *,
    source_id: Any = None,
    subset: str | None = None,
    score_chosen: Any = None,
    score_rejected: Any = None,
    label: str = "chosen",
    kind: str = "original",
    metadata: dict[str, Any] | None = None,
    same_text_ok: bool = False,
) -> PreferencePair:
    """The checks every pair passes, whatever its format (``same_text_ok``: a benchmark group's
    pair, where two answers of one row may be the same text and are scored as a tie)."""
    prompt = text_field(prompt, "prompt", ctx)
    chosen = text_field(chosen, "chosen", ctx)
    rejected = text_field(rejected, "rejected", ctx)
    if chosen.strip() == rejected.strip() and not same_text_ok:
        raise RowError(Reason.IDENTICAL_RESPONSES, "chosen and rejected are the same text")
    if label not in LABELS:
        raise RowError(Reason.INVALID_LABEL, f"label must be one of {LABELS}, got {label!r}")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        source=ctx.source,
        source_id=str(source_id) if source_id is not None else ctx.location,
        label=label,
        kind=kind,
        subset=subset if subset is not None else ctx.subset,
        score_chosen=score_field(score_chosen, "score_chosen"),
        score_rejected=score_field(score_rejected, "score_rejected"),
        metadata=metadata or {},
    )


def split_messages(value: Any, name: str) -> tuple[Any, str | None]:
    """A chat-message list -> (final assistant text, the user prompt). Strings pass through."""
    if not isinstance(value, list):
        return value, None
    if not value or not all(isinstance(m, dict) for m in value):
        raise RowError(Reason.BAD_MESSAGES, f"field {name!r} must be a non-empty list of messages")
    last = value[-1]
    if last.get("role") != "assistant":
        raise RowError(
            Reason.BAD_MESSAGES, f"field {name!r}: the last message must be the assistant's answer"
        )
    users = [m for m in value[:-1] if m.get("role") == "user"]
    others = [m for m in value[:-1] if m.get("role") not in ("user", "system")]
    if len(users) != 1 or others:
        raise RowError(
            Reason.BAD_MESSAGES,
            f"field {name!r}: only single-turn conversations are supported "
            f"({len(value) - 1} messages before the answer)",
        )
    return last.get("content"), users[0].get("content")


def _source_id(rec: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if rec.get(k) is not None:
            return rec[k]
    return None


def parse_ultrafeedback_binarized(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    chosen, p_chosen = split_messages(require(rec, "chosen"), "chosen")
    rejected, p_rejected = split_messages(require(rec, "rejected"), "rejected")
    if p_chosen is not None and p_rejected is not None and p_chosen != p_rejected:
        raise RowError(Reason.PROMPT_MISMATCH, "chosen and rejected answer different prompts")
    prompt = rec.get("prompt")
    if prompt is None:
        prompt = p_chosen if p_chosen is not None else p_rejected
    if prompt is None:
        require(rec, "prompt")
    meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    return [
        make_pair(
            ctx,
            prompt,
            chosen,
            rejected,
            source_id=_source_id(rec, "prompt_id", "source_index", "id"),
            score_chosen=rec.get("score_chosen", meta.get("score_chosen")),
            score_rejected=rec.get("score_rejected", meta.get("score_rejected")),
        )
    ]


def _mean_rating(completion: dict[str, Any]) -> float | None:
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        rating = aspect.get("Rating") if isinstance(aspect, dict) else None
        try:
            ratings.append(float(rating))
        except (TypeError, ValueError):
            continue  # "N/A" ratings are skipped, as in UltraFeedback's own averaging
    return sum(ratings) / len(ratings) if ratings else None


def _raw_score(completion: dict[str, Any], how: str) -> float | None:
    if how == "mean_rating":
        return _mean_rating(completion)
    value = completion.get("overall_score")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def parse_ultrafeedback_raw(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    prompt = require(rec, "instruction")
    completions = require(rec, "completions")
    if not isinstance(completions, list):
        raise RowError(Reason.WRONG_TYPE, "field 'completions' must be a list")
    rated = []
    for i, c in enumerate(completions):
        if isinstance(c, dict) and isinstance(c.get("response"), str) and c["response"].strip():
            score = _raw_score(c, ctx.binarize.score)
            if score is not None:
                rated.append((score, i, c))
    if len(rated) < 2:
        raise RowError(
            Reason.TOO_FEW_COMPLETIONS,
            f"{len(rated)} of {len(completions)} completions have a response and a "
            f"{ctx.binarize.score}; two are needed",
        )
    best = max(rated, key=lambda t: (t[0], -t[1]))
    rest = [t for t in rated if t[1] != best[1]]
    if ctx.binarize.rejected == "lowest":
        worst = min(rest, key=lambda t: (t[0], t[1]))
    else:
        seed = hashlib.sha256(f"{ctx.binarize.seed}:{prompt}".encode()).digest()
        worst = random.Random(seed).choice(rest)
    return [
        make_pair(
            ctx,
            prompt,
            best[2]["response"],
            worst[2]["response"],
            source_id=_source_id(rec, "id", "prompt_id"),
            score_chosen=best[0],
            score_rejected=worst[0],
            metadata={
                "origin": rec.get("source"),
                "chosen_model": best[2].get("model"),
                "rejected_model": worst[2].get("model"),
                "binarize": ctx.binarize.model_dump(),
            },
        )
    ]


def parse_rewardbench(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    subset = rec.get("subset") if rec.get("subset") is not None else ctx.subset
    if subset is None:
        require(rec, "subset")
    return [
        flat_pair(
            rec,
            ctx,
            source_id=rec.get("id"),
            subset=text_field(subset, "subset", ctx),
            metadata={k: rec[k] for k in ("chosen_model", "rejected_model") if rec.get(k)},
        )
    ]


def parse_llmbar(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    label = require(rec, "label")
    if str(label).strip() not in ("1", "2"):
        raise RowError(Reason.INVALID_LABEL, f"label must be 1 or 2, got {label!r}")
    one, two = require(rec, "output_1"), require(rec, "output_2")
    chosen, rejected = (one, two) if str(label).strip() == "1" else (two, one)
    return [make_pair(ctx, require(rec, "input"), chosen, rejected, source_id=rec.get("id"))]


def parse_pairs(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    version = rec.get("schema_version", PAIRS_SCHEMA_VERSION)
    if version != PAIRS_SCHEMA_VERSION:
        raise RowError(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version!r} is not one this crome-ray reads ({PAIRS_SCHEMA_VERSION})",
        )
    meta = rec.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta else {}
        except ValueError:
            meta = {"raw": meta}
    return [
        flat_pair(
            rec,
            ctx,
            source_id=rec.get("source_id"),
            subset=rec.get("subset"),
            score_chosen=rec.get("score_chosen"),
            score_rejected=rec.get("score_rejected"),
            label=rec.get("label") or "chosen",
            kind=rec.get("kind") or "original",
            metadata=meta if isinstance(meta, dict) else {},
        )
    ]


def _answers(rec: dict[str, Any], name: str, n: int | None = None) -> list[Any]:
    value = require(rec, name)
    if not isinstance(value, list) or not value:
        raise RowError(Reason.WRONG_TYPE, f"field {name!r} must be a non-empty list of answers")
    if n is not None and len(value) != n:
        raise RowError(Reason.WRONG_TYPE, f"field {name!r} must hold {n} answers, got {len(value)}")
    return value


RB2_TIES = "Ties"


def parse_rewardbench2(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    """One RewardBench 2 row: its chosen[0] against each rejected answer; for Ties, each other
    chosen answer against rejected[0] as well, so that every answer is scored."""
    group = text_field(str(require(rec, "id")), "id", ctx)
    chosen, rejected = _answers(rec, "chosen"), _answers(rec, "rejected")
    subset = rec.get("subset") if rec.get("subset") is not None else ctx.subset
    subset = text_field(subset if subset is not None else require(rec, "subset"), "subset", ctx)
    n_correct = rec.get("num_correct", len(chosen))
    if n_correct != len(chosen):
        raise RowError(Reason.WRONG_TYPE, f"num_correct is {n_correct!r} but chosen holds {len(chosen)}")
    if subset == RB2_TIES and not re.fullmatch(r"(ref|tied):\d+", group):
        raise RowError(Reason.WRONG_TYPE, f"a Ties id is ref:<n> or tied:<n>, got {group!r}")
    positions = [(0, j) for j in range(len(rejected))]
    if subset == RB2_TIES:
        positions += [(i, 0) for i in range(1, len(chosen))]
    meta = {
        "benchmark": "rewardbench2",
        "group": group,
        "num_correct": len(chosen),
        "num_incorrect": len(rejected),
    }
    return [
        make_pair(ctx, require(rec, "prompt"), chosen[i], rejected[j], source_id=group, subset=subset,
                  metadata={**meta, "chosen_index": i, "rejected_index": j, "member": f"{group}#{i}/{j}"},
                  same_text_ok=True)
        for i, j in positions
    ]  # fmt: skip


RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
_RM_BENCH_FILE = re.compile(r"(?:^|/)(?P<domain>[a-z-]+)_filtered\.json(?:$|[#:])")


def parse_rm_bench(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    """One RM-Bench prompt: each chosen style against each rejected style (the 3×3 matrix)."""
    group = text_field(str(require(rec, "id")), "id", ctx)
    chosen = _answers(rec, "chosen", len(RM_BENCH_STYLES))
    rejected = _answers(rec, "rejected", len(RM_BENCH_STYLES))
    domain = rec.get("domain") or ctx.subset
    if domain is None and (m := _RM_BENCH_FILE.search(ctx.file or ctx.location)):
        domain = m.group("domain")
    if domain is None:
        raise RowError(
            Reason.MISSING_FIELD,
            "no domain: the row has no 'domain', its file is not <domain>_filtered.json, and source.subset "
            "is unset",
        )
    domain = text_field(domain, "domain", ctx)
    meta = {"benchmark": "rm_bench", "group": f"{domain}/{group}"}  # ids are per domain file
    if rec.get("subset"):
        meta["source_subset"] = rec["subset"]
    return [
        make_pair(ctx, require(rec, "prompt"), chosen[i], rejected[j], source_id=group, subset=domain,
                  metadata={**meta, "chosen_style": i, "rejected_style": j,
                            "member": f"{meta['group']}#{i}/{j}"},
                  same_text_ok=True)
        for i in range(len(RM_BENCH_STYLES))
        for j in range(len(RM_BENCH_STYLES))
    ]  # fmt: skip


HH_ASSISTANT = "\n\nAssistant:"
_HH_FOLDER = re.compile(r"(?:^|/)(?P<subset>[a-z]+-[a-z-]+)/[^/]+\.jsonl(?:\.gz)?$")


def split_transcript(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Two HH-RLHF transcripts -> (the dialogue they share, chosen's last turn, rejected's).
    The shared dialogue is cut at the last ``Assistant:`` of the two's common prefix (TRL's
    ``extract_dialogue`` rule: an answer that itself says "Assistant:" cannot split it)."""
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, n)
    if cut < 0:
        raise RowError(
            Reason.BAD_MESSAGES, "the two transcripts share no dialogue up to an 'Assistant:' turn"
        )
    end = cut + len(HH_ASSISTANT)
    return chosen[:cut].strip(), chosen[end:].strip(), rejected[end:].strip()


def parse_hh_rlhf(rec: dict[str, Any], ctx: RowContext) -> list[PreferencePair]:
    chosen = text_field(require(rec, "chosen"), "chosen", ctx)
    rejected = text_field(require(rec, "rejected"), "rejected", ctx)
    prompt, a, b = split_transcript(chosen, rejected)
    subset = ctx.subset
    if subset is None:
        m = _HH_FOLDER.search(ctx.file or ctx.location)
        subset = m.group("subset") if m else "hh-rlhf"
    return [make_pair(ctx, prompt, a, b, subset=subset)]


ROW_PARSERS: dict[str, Callable[[dict[str, Any], RowContext], list[PreferencePair]]] = {
    "ultrafeedback_binarized": parse_ultrafeedback_binarized,
    "ultrafeedback_raw": parse_ultrafeedback_raw,
    "rewardbench": parse_rewardbench,
    "llmbar": parse_llmbar,
    "pairs": parse_pairs,
    "rewardbench2": parse_rewardbench2,
    "rm_bench": parse_rm_bench,
    "hh_rlhf": parse_hh_rlhf,
}


# Fields that change what a row means (a tie is not a preference), with the format that
# reads them. A format that does not read such a field must not be used on rows that have it.
MEANINGFUL_FIELDS: dict[str, tuple[str, Any]] = {
    # field: (the format that reads it, the value that means what ignoring it would mean)
    "label": ("pairs", "chosen"),
    "kind": ("pairs", "original"),
}
READS: dict[str, frozenset[str]] = {
    "pairs": frozenset({"label", "kind"}),
    "llmbar": frozenset({"label"}),  # 1 or 2: which output is better
}


def unread_fields(fmt: str, rec: dict[str, Any]) -> list[str]:
    """Fields of ``rec`` that change its meaning but that format ``fmt`` would ignore."""
    return [
        name
        for name, (_, neutral) in MEANINGFUL_FIELDS.items()
        if rec.get(name) not in (None, "", neutral) and name not in READS.get(fmt, frozenset())
    ]


def detect_format(rec: dict[str, Any]) -> str | None:
    """Guess a row-wise format from one record's keys (``format: auto``)."""
    keys = set(rec)
    if {"pair_id", "schema_version", "chosen", "rejected"} <= keys:
        return "pairs"
    if {"chosen", "rejected"} <= keys and keys & set(MEANINGFUL_FIELDS) and "output_1" not in keys:
        return "pairs"  # a label or kind column: only the pairs format reads them
    if {"instruction", "completions"} <= keys:
        return "ultrafeedback_raw"
    answers = rec.get("chosen")
    listed = isinstance(answers, list) and answers and all(isinstance(x, str) for x in answers)
    if {"prompt", "chosen", "rejected"} <= keys and listed:  # lists of answers, not chat messages
        return "rewardbench2" if keys & {"num_correct", "total_completions"} else "rm_bench"
    if keys == {"chosen", "rejected"} and isinstance(answers, str) and answers.lstrip().startswith("Human:"):
        return "hh_rlhf"
    if {"input", "output_1", "output_2", "label"} <= keys:
        return "llmbar"
    if {"prompt", "chosen", "rejected", "subset"} <= keys:
        return "rewardbench"
    if {"chosen", "rejected"} <= keys:
        return "ultrafeedback_binarized"
    return None


# --- XSTest: prompts file + labelled completions of several models -> RewardBench pairs ---

XSTEST_COMPLY = "1_full_compliance"
XSTEST_REFUSE = "2_full_refusal"
XSTEST_LABELS = (XSTEST_COMPLY, XSTEST_REFUSE, "3_partial_refusal")
_XSTEST_MODEL = re.compile(r"xstest_v2_completions_(?P<model>[^/.]+)\.csv")


@dataclass(frozen=True)
class SourceRecord:
    """One parsed record of a source file, with where it came from."""

    file: str
    location: str
    value: dict[str, Any]


@dataclass(frozen=True)
class RowProblem:
    """A record that gave no pair: quarantined with its reason, or (``bad=False``) only counted."""

    location: str
    error: RowError
    raw: Any = None
    bad: bool = True


def xstest_grouped(
    records: Iterable[SourceRecord],
) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str, str, Any]]], list[RowProblem]]:
    """XSTest's files by prompt id: the prompts (text, safe/unsafe label, type), each prompt's
    completions as (model, final_label, text), and the records that could not be read."""
    prompts: dict[str, dict[str, Any]] = {}
    completions: dict[str, list[tuple[str, str, Any]]] = {}
    problems: list[RowProblem] = []
    for r in records:
        name = r.file.rsplit("/", 1)[-1]
        try:
            if name.startswith("xstest_prompts"):
                pid = str(require(r.value, "id")).strip()
                label = require(r.value, "label")
                if label not in ("safe", "unsafe"):
                    raise RowError(Reason.INVALID_LABEL, f"label must be safe or unsafe, got {label!r}")
                prompts[pid] = {
                    "prompt": require(r.value, "prompt"),
                    "label": label,
                    "type": r.value.get("type"),
                }
            else:
                match = _XSTEST_MODEL.search(name)
                model = match.group("model") if match else name
                pid = str(require(r.value, "id")).strip().removeprefix("v2-")
                final = require(r.value, "final_label")
                if final not in XSTEST_LABELS:
                    raise RowError(
                        Reason.INVALID_LABEL,
                        f"final_label must be one of {XSTEST_LABELS}, got {final!r}",
                    )
                completions.setdefault(pid, []).append((model, final, require(r.value, "completion")))
        except RowError as e:
            problems.append(RowProblem(r.location, e, r.value))
    return prompts, completions, problems


def xstest_pairs(records: Iterable[SourceRecord], ctx: RowContext) -> Iterator[PreferencePair | RowProblem]:
    """Pairs in the style of RewardBench's xstest-should-respond / -should-refuse.

    A safe prompt pairs a fully complying completion (chosen) with a full refusal
    (rejected); an unsafe prompt the other way round. Completions are taken in model
    name order, one pair per prompt. Prompts without both a complying and a refusing
    completion are counted as ``unpaired`` (not bad input, so not quarantined).
    """
    prompts, completions, problems = xstest_grouped(records)
    yield from problems
    for pid in sorted(completions, key=lambda s: (len(s), s)):
        if pid not in prompts:
            err = RowError(
                Reason.UNKNOWN_PROMPT, f"completions for id {pid} have no row in xstest_prompts.csv"
            )
            yield RowProblem(f"completions id {pid}", err, completions[pid][0])
    for pid in sorted(prompts, key=lambda s: (len(s), s)):
        p = prompts[pid]
        cands = sorted(completions.get(pid, []))
        good, bad = (XSTEST_COMPLY, XSTEST_REFUSE) if p["label"] == "safe" else (XSTEST_REFUSE, XSTEST_COMPLY)
        chosen = next((c for c in cands if c[1] == good and isinstance(c[2], str) and c[2].strip()), None)
        rejected = next((c for c in cands if c[1] == bad and isinstance(c[2], str) and c[2].strip()), None)
        if chosen is None or rejected is None:
            err = RowError("unpaired", f"prompt {pid} has no {good} and {bad} completions to pair")
            yield RowProblem(f"xstest id {pid}", err, p, bad=False)
            continue
        subset = "xstest-should-respond" if p["label"] == "safe" else "xstest-should-refuse"
        try:
            yield make_pair(
                RowContext(ctx.source, f"xstest id {pid}", ctx.max_text_chars, ctx.subset, ctx.binarize),
                p["prompt"],
                chosen[2],
                rejected[2],
                source_id=pid,
                subset=subset,
                metadata={
                    "chosen_model": chosen[0],
                    "rejected_model": rejected[0],
                    "type": p["type"],
                },
            )
        except RowError as e:
            yield RowProblem(f"xstest id {pid}", e, p)
