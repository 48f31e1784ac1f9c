"""The oracle runs behind the evaluation's paraphrase and back-translation (Ray composition).

The requests of ``evaluate.rewrites`` go through ``oracle.job.run_oracle_job``, so they get
everything the oracle layer gives any job: the cluster-wide quota, the hard dollar cap, the
response cache, the ledger, the fallback to the local oracle, and a committed ``oracle`` run
whose ``responses`` and ``quarantine`` tables say what each request got. Two passes at most:

1. the paraphrases and the first back-translation leg (into the pivot language);
2. the return leg (back into English), built from pass 1's answers.

Each pass's requests are written as a file named by a hash of its content, beside the oracle
runs (``<root>/oracle/<eval run>-rewrites<N>.<hash>.requests.jsonl``). The oracle run's config
names that file, and its run name is the evaluation's plus that config's fingerprint, so the
same requests under the same oracle settings are the same committed run: a second evaluation
finds it committed and calls nothing, and other requests (other data, a new limit) make a new
run instead of a conflict. The runs are the evaluation's inputs (``oracle:rewrites1``,
``oracle:rewrites2``): re-making one makes the evaluation run again.

``rewrites.oracle.budget.cap_usd`` bounds the two passes together: pass 2 gets what pass 1
left of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from crome_ray.config import StorageConfig
from crome_ray.evaluate.config import RewriteSettings
from crome_ray.evaluate.rewrites import (
    BACK_TRANSLATION,
    FROM_PIVOT,
    PARAPHRASE,
    TO_PIVOT,
    Outcome,
    Plan,
    assemble,
    chained,
    first_kinds,
    first_pass,
    plan_rewrites,
    read_outcome,
    second_pass,
)
from crome_ray.evaluate.variants import EvalPair, Variant
from crome_ray.oracle.config import OracleConfig, OracleJobConfig
from crome_ray.oracle.job import JOB as ORACLE_JOB
from crome_ray.runs import StepResult
from crome_ray.storage import RunFolder, filesystem, join

MICROS = Decimal(1_000_000)


@dataclass(frozen=True)
class RewriteResult:
    runs: dict[str, RunFolder]  # the evaluation's inputs: "oracle:rewrites1" -> its oracle run
    variants: list[Variant]
    rows: list[dict[str, Any]]  # the ``rewrites`` table
    summary: dict[str, Any]  # for the report: per transformation and per oracle run


def requests_file(
    rows: Sequence[Mapping[str, Any]], root: str, eval_run: str, n: int, storage: StorageConfig
) -> str:
    """The requests as jsonl, at a path named by their content (written unless already there)."""
    body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()
    digest = hashlib.sha256(body).hexdigest()[:12]
    uri = join(root, ORACLE_JOB, f"{eval_run}-rewrites{n}.{digest}.requests.jsonl")
    fs, path = filesystem(uri, storage)
    if not (fs.exists(path) and hashlib.sha256(fs.cat_file(path)).hexdigest()[:12] == digest):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, body)
    return uri


def oracle_config(
    s: RewriteSettings, storage: StorageConfig, input_uri: str, eval_run: str, n: int, spent: dict[str, int]
) -> OracleJobConfig:
    """Pass ``n``'s oracle job; its caps are what earlier passes (``spent``, micro-dollars) left."""

    def left(o: OracleConfig, used: int) -> OracleConfig:
        cap = max(Decimal(0), o.budget.cap_usd - Decimal(used) / MICROS)
        return o.model_copy(update={"budget": o.budget.model_copy(update={"cap_usd": cap})})

    cfg = OracleJobConfig(
        input=input_uri,
        oracle=left(s.oracle, spent["primary"]),
        fallback=s.fallback.model_copy(update={"oracle": left(s.fallback.oracle, spent["fallback"])}),
        storage=storage,
        workers=s.workers,
        worker_cpus=s.worker_cpus,
        batch_size=s.batch_size,
        batches_per_worker=s.batches_per_worker,
        no_key=s.no_key,
    )
    return cfg.model_copy(update={"run_name": f"{eval_run}-rewrites{n}-{cfg.fingerprint()[:8]}"})


def _spent(result: StepResult, local_only: bool) -> tuple[int, int]:
    """(the primary's, the fallback's) spend, micro-dollars; ``local_only``: the run's one pass was
    the fallback oracle's."""
    d = result.details
    first = int((d.get("oracle") or {}).get("spent_micros", 0))
    fallback = int((d.get("fallback") or {}).get("spent_micros", 0))
    return (0, first) if local_only else (first, fallback)


def _outcomes(run: RunFolder, kinds: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
    responses = run.read_table("responses").select(["id", "response_json"]).to_pylist()
    quarantine = (
        run.read_table("quarantine").select(["source_id", "reason"]).to_pylist()
        if run.table_files("quarantine")
        else []
    )
    return {k: read_outcome(k, asked, responses, quarantine) for k, asked in kinds.items()}


def rewrite_pairs(
    s: RewriteSettings,
    storage: StorageConfig,
    eval_run: str,
    pairs: Mapping[str, Sequence[EvalPair]],
    api_key: SecretStr,
    fallback_key: SecretStr | None,
    log: Callable[[str], None],
) -> RewriteResult:
    """Rewrite the planned pairs' answers through the oracle; the variants and what was skipped."""
    from crome_ray.oracle.job import run_oracle_job

    plan: Plan = plan_rewrites(pairs, limit=s.limit, max_chars=s.max_chars)
    pivot = s.pivot_language
    spent = {"primary": 0, "fallback": 0}
    runs: dict[str, RunFolder] = {}
    summary_runs: dict[str, Any] = {}

    def run_pass(
        n: int, rows: list[dict[str, Any]], kinds: Mapping[str, Sequence[str]]
    ) -> dict[str, Outcome]:
        if not rows:
            return {k: Outcome() for k in kinds}
        uri = requests_file(rows, storage.root, eval_run, n, storage)
        cfg = oracle_config(s, storage, uri, eval_run, n, spent)
        last = [0.0]

        def progress(st: dict[str, Any]) -> None:
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                done = f"{st['rows']:,}/{st['of']:,} requests"
                log(f"  rewrites pass {n}: {done}, ${st.get('spent_usd', 0):.4f} spent")

        result = run_oracle_job(cfg, api_key, progress=progress, fallback_key=fallback_key)
        primary, fallback = _spent(result, s.fallback.policy == "local_only")
        spent["primary"] += primary
        spent["fallback"] += fallback
        state = "already committed" if result.skipped else "committed"
        cost = f"${primary / 1e6:.4f}{' when it ran' if result.skipped else ''}"
        log(f"rewrites pass {n}: {len(rows):,} requests, {state}: {result.run.uri} ({cost})")
        runs[f"oracle:rewrites{n}"] = result.run
        summary_runs[f"rewrites{n}"] = {
            "uri": result.run.uri,
            "requests": len(rows),
            "counts": result.counts,
            "spent_usd": primary / 1e6,
            "fallback_spent_usd": fallback / 1e6,
            "reused": result.skipped,
        }
        return _outcomes(result.run, kinds)

    asked = sorted(plan.answers)
    kinds1 = {k: asked for k in first_kinds(s.transformations)}
    log(
        f"rewrites ({', '.join(s.transformations)}): {len(plan.pairs):,} pairs, {len(asked):,} distinct "
        f"answers to send, {len(plan.too_long):,} over {s.max_chars:,} characters"
    )
    first = run_pass(1, first_pass(plan, s.transformations, pivot), kinds1)
    outcomes: dict[str, Outcome] = {}
    if PARAPHRASE in first:
        outcomes[PARAPHRASE] = first[PARAPHRASE]
    if TO_PIVOT in first:
        pivots = first[TO_PIVOT].texts
        second = run_pass(2, second_pass(pivots, pivot), {FROM_PIVOT: sorted(pivots)})
        outcomes[BACK_TRANSLATION] = chained(first[TO_PIVOT], second[FROM_PIVOT])

    variants: list[Variant] = []
    rows: list[dict[str, Any]] = []
    per: dict[str, Any] = {}
    for name in s.transformations:
        made = assemble(plan, name, outcomes[name])
        variants += made.variants
        rows += made.rows
        per[name] = {"pairs": len(plan.pairs), "variants": len(made.variants), "skipped": dict(made.skipped)}
        skipped = ", ".join(f"{n} {why}" for why, n in made.skipped.most_common()) or "none"
        log(f"  {name}: {len(made.variants):,} of {len(plan.pairs):,} pairs rewritten (skipped: {skipped})")
    summary = {
        "transformations": per,
        "pivot_language": pivot if BACK_TRANSLATION in s.transformations else None,
        "answers": len(asked),
        "too_long": len(plan.too_long),
        "oracle_runs": summary_runs,
        "spent_usd": spent["primary"] / 1e6,
        "fallback_spent_usd": spent["fallback"] / 1e6,
        "cap_usd": float(s.oracle.budget.cap_usd),
    }
    return RewriteResult(runs, variants, rows, summary)
