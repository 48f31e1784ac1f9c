"""The oracle job (Ray composition): a table of prompts -> answers, under quota, cap and cache.

Driver: read and check the prompts (bad rows to quarantine), check the model id with
one free call, start the run's governor actor, stream the rows through
``OracleStage`` actors with Ray Data, write ``responses`` (and oracle failures to
``quarantine``) as the batches come back, then close the governor (exact spend into
the ledger) and commit the run folder.

Fallback (``fallback.policy``): the rows the primary oracle could not serve (out of
budget; with ``on_error`` also out of quota, repeated 5xx or timeouts, refused, or the
model unavailable) are held back from the quarantine and sent through a second pass
on the local oracle (``fallback.oracle``, a vLLM engine per actor), with its own
governor, ledger and cache. ``local_only`` skips the primary. Every row records the
backend and model that served it; a row neither could serve is quarantined with both
reasons.

State that must outlive a crash lives beside the run folder, not in it: the ledger
(``<root>/oracle/<run>.ledger.json``) and the response cache
(``oracle.cache`` or ``<root>/oracle-cache``). A resumed run pays only for what it
does not have, and counts what the crashed one may have spent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from crome_ray.data.formats import RowError, RowProblem
from crome_ray.data.readers import read_source
from crome_ray.heap import Trimmer
from crome_ray.oracle.backends import make_backend
from crome_ray.oracle.choice import plan_oracle
from crome_ray.oracle.config import OracleConfig, OracleJobConfig
from crome_ray.oracle.protocol import ErrorKind
from crome_ray.oracle.stage import (
    RESULT_COLUMNS,
    OracleStage,
    request_from_row,
    result_columns,
    stage_resources,
)
from crome_ray.records import Reason
from crome_ray.runs import Step, StepResult
from crome_ray.storage import join

JOB = "oracle"
INPUT_COLUMNS = {
    "id": pa.string(),
    "prompt": pa.string(),
    "system": pa.string(),
    "schema": pa.string(),
    "max_output_tokens": pa.int64(),  # per row; null: the job's max_output_tokens
}
RESPONSE_SCHEMA = pa.schema(
    [pa.field(k, t) for k, t in {**INPUT_COLUMNS, **RESULT_COLUMNS}.items()],
    metadata={"crome_ray.table": "oracle_responses"},
)
Progress = Callable[[dict[str, Any]], None]


OracleJobResult = StepResult


def run_name(cfg: OracleJobConfig) -> str:
    return cfg.run_name or f"oracle-{cfg.fingerprint()[:8]}"


def cache_root(cfg: OracleJobConfig) -> str:
    return cfg.oracle.cache or join(cfg.storage.root, "oracle-cache")


def ledger_uri(cfg: OracleJobConfig, pass_: str = "") -> str:
    """The run's spend ledger (``pass_="fallback"``: the fallback pass's own)."""
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}{'.' + pass_ if pass_ else ''}.ledger.json")


def read_prompts(cfg: OracleJobConfig) -> tuple[list[dict[str, Any]], list[RowProblem]]:
    rows, bad = [], []
    for item in read_source(cfg.input, cfg.storage):
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
        if isinstance(item, RowProblem):
            bad.append(item)
            continue
        v = item.value
        prompt = v.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            err = RowError(Reason.MISSING_FIELD, "a prompt row needs a non-empty 'prompt' string")
            bad.append(RowProblem(item.location, err, v))
            continue
        most = v.get("max_output_tokens")
        if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
            err = RowError(Reason.WRONG_TYPE, f"max_output_tokens must be a positive integer, got {most!r}")
            bad.append(RowProblem(item.location, err, v))
            continue
        rows.append(
            {
                "id": str(v.get("id", item.location)),
                "prompt": prompt,
                "system": v.get("system") if isinstance(v.get("system"), str) else None,
                "schema": v.get("schema") if isinstance(v.get("schema"), str) else None,
                "max_output_tokens": most,
            }
        )
    return rows, bad


def batch_state_uri(cfg: OracleJobConfig) -> str:
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}.batches.json")


def run_oracle_job(
    cfg: OracleJobConfig,
    api_key: SecretStr,
    *,
    force: bool = False,
    progress: Progress | None = None,
    fallback_key: SecretStr | None = None,
) -> OracleJobResult:
    """``api_key``: the primary oracle's; ``fallback_key``: the fallback's, if it needs one
    (an OpenAI-compatible server with a key; a vLLM engine needs none)."""
    plan = plan_oracle(cfg, api_key, fallback_key)  # no price, no cap: refused before anything else
    step = Step(JOB, run_name(cfg), cfg, force=force)
    if not step.begin():  # committed by this same config: nothing to do
        return step.result
    rows, bad_input = read_prompts(cfg)
    # a wrong model id fails here: nothing spent, the last run untouched; under on_error an
    # unavailable primary sends the whole table to the fallback
    checked = plan.checked()
    primary = plan.primary

    responses = step.table("responses", RESPONSE_SCHEMA, cfg.rows_per_file)
    quarantine = step.quarantine(source="prompts", stage="oracle.input", rows_per_file=cfg.rows_per_file)
    for problem in bad_input:
        quarantine.put_problem(problem)
    outcome: Counter = Counter()
    held: list[dict[str, Any]] = []  # primary failures the fallback will serve
    eligible = plan.fallback_kinds

    def put(row: dict[str, Any], tried_before: str | None = None) -> None:
        kind = row["oracle_error"]
        outcome[kind or ("cached" if row["cached"] else "answered")] += 1
        if kind is None:
            responses.add(row)
        else:
            detail = row["oracle_error_detail"] or kind
            if tried_before:
                detail = f"{tried_before}; then {row['backend']} {row['model']}: {detail}"
            where = f"id {row['id']}"
            quarantine.put(where, kind, detail, row["prompt"], source_id=row["id"], stage="oracle")

    def put_primary(row: dict[str, Any]) -> None:
        if row["oracle_error"] in eligible:
            held.append(row)
        else:
            put(row)

    def report(s: dict[str, Any]) -> None:
        if progress:
            progress({"rows": sum(outcome.values()) + len(held), "of": len(rows), **s})

    stats: dict[str, Any] = {}
    if checked.unavailable is None:
        run_rows = _run_batch if primary.mode == "batch" else _run_online
        stats = run_rows(cfg, primary, ledger_uri(cfg), plan.api_key, rows, put_primary, report)
    else:
        held = [
            {**r, "oracle_error": str(ErrorKind.FATAL), "backend": primary.backend, "model": primary.model}
            for r in rows
        ]
    fallback_stats = None
    if held:
        before = {r["id"]: f"{r['backend']} {r['model']}: {r['oracle_error']}" for r in held}
        served_for = Counter(r["oracle_error"] for r in held)
        fb = plan.fallback
        assert fb is not None  # rows are held only under a fallback policy
        fb_rows = [{k: r[k] for k in INPUT_COLUMNS} for r in held]
        held.clear()
        fallback_stats = _run_online(
            cfg,
            fb,
            ledger_uri(cfg, "fallback"),
            plan.fallback_key,
            fb_rows,
            lambda row: put(row, before[row["id"]]),
            report,
        )
        fallback_stats["asked_for"] = dict(served_for)  # the primary's failures it was asked to serve
    last = fallback_stats or stats
    if progress and last:  # the last pass's final numbers (none when no pass ran: no rows)
        progress({"rows": sum(outcome.values()), "of": len(rows), **last})
    counts = {"prompts": len(rows) + len(bad_input), "bad_input": len(bad_input), **dict(outcome)}
    extra: dict[str, Any] = {"ledger": ledger_uri(cfg), "cache": cache_root(cfg)}
    if fallback_stats is not None:
        extra["fallback"] = fallback_stats
        extra["fallback_ledger"] = ledger_uri(cfg, "fallback")
    if checked.unavailable is not None:
        extra["primary_unavailable"] = checked.unavailable
    return step.commit(counts, oracle=stats, **extra)


def _run_online(cfg, oracle: OracleConfig, ledger: str, api_key, rows, put, report) -> dict[str, Any]:
    """Ray Data actors call the oracle; one governor actor shares quota, cap and cache index."""
    import ray

    from crome_ray.oracle.governor import governor_actor

    storage_json = cfg.storage.model_dump_json()
    cache = oracle.cache or cache_root(cfg)
    gov_name = f"governor-{run_name(cfg)}-{uuid.uuid4().hex[:6]}"
    governor = governor_actor(gov_name).remote(oracle.model_dump_json(), ledger, cache, storage_json)
    try:
        ray.get(governor.ping.remote())
        table = pa.Table.from_pylist(
            rows, schema=pa.schema([pa.field(k, t) for k, t in INPUT_COLUMNS.items()])
        )
        # one block per batch, so every actor of the pool gets work
        blocks = [table.slice(i, cfg.batch_size) for i in range(0, max(table.num_rows, 1), cfg.batch_size)]
        res = stage_resources(
            oracle,
            workers=cfg.workers,
            worker_cpus=cfg.worker_cpus,
            batches_per_worker=cfg.batches_per_worker,
        )
        ds = ray.data.from_arrow(blocks).map_batches(
            OracleStage,
            fn_constructor_kwargs={
                "caller_args": {
                    "config_json": oracle.model_dump_json(),
                    "cache_root": cache,
                    "storage_json": storage_json,
                    "api_key": api_key,
                    "governor_name": gov_name,
                },
                "max_output_tokens": cfg.max_output_tokens,
            },
            compute=ray.data.ActorPoolStrategy(
                size=res["size"],
                max_concurrent_calls_per_actor=res["concurrency"],
                enable_true_multi_threading=res["concurrency"] > 1,
            ),
            num_cpus=res["num_cpus"],
            num_gpus=res["num_gpus"],
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
        )
        last, trimmer = 0.0, Trimmer()
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                put(row)
            trimmer.tick()  # the driver's freed heap back to the OS: its memory stays flat
            if time.monotonic() - last > 2.0:
                last = time.monotonic()
                report(ray.get(governor.stats.remote()))
        return ray.get(governor.close.remote())
    finally:
        ray.kill(governor)


def _run_batch(cfg, o: OracleConfig, ledger: str, api_key, rows, put, report) -> dict[str, Any]:
    """Gemini Batch API from the driver: no Ray workers needed, the provider does the work."""
    from crome_ray.oracle.batch import BatchRunner, BatchState
    from crome_ray.oracle.cache import LedgerStore, ResponseCache
    from crome_ray.oracle.governor_core import GovernorCore

    cache = ResponseCache(o.cache or cache_root(cfg), o.backend, o.model, cfg.storage)
    core = GovernorCore(o, LedgerStore(ledger, cfg.storage), cache.scan())
    requests = [request_from_row(r, cfg.max_output_tokens) for r in rows]

    async def go():
        backend = make_backend(o, api_key.get_secret_value())
        state = BatchState.load(LedgerStore(batch_state_uri(cfg), cfg.storage))
        try:
            return await BatchRunner(o, backend, core, cache, state).run(requests)
        finally:
            await backend.aclose()

    for row, r in zip(rows, asyncio.run(go()), strict=True):
        put({**row, **result_columns(r, o.backend, o.model)})
    cache.close()
    return core.close()
