"""The oracle job (Ray composition): a table of prompts -> answers, under quota, cap and cache.

Driver: read and check the prompts (bad rows to quarantine), check the model id with
one free call, start the run's governor actor, stream the rows through
``OracleStage`` actors with Ray Data, write ``responses`` (and oracle failures to
``quarantine``) as the batches come back, then close the governor (exact spend into
the ledger) and commit the run folder.

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

from crome_ray.config import OracleJobConfig
from crome_ray.data.formats import RowError, RowProblem
from crome_ray.data.readers import read_source
from crome_ray.oracle.backends import make_backend
from crome_ray.oracle.stage import RESULT_COLUMNS, OracleStage, request_from_row, result_columns
from crome_ray.records import Reason
from crome_ray.runs import Step, StepResult
from crome_ray.storage import join

JOB = "oracle"
INPUT_COLUMNS = {"id": pa.string(), "prompt": pa.string(), "system": pa.string(), "schema": pa.string()}
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


def ledger_uri(cfg: OracleJobConfig) -> str:
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}.ledger.json")


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
        rows.append(
            {
                "id": str(v.get("id", item.location)),
                "prompt": prompt,
                "system": v.get("system") if isinstance(v.get("system"), str) else None,
                "schema": v.get("schema") if isinstance(v.get("schema"), str) else None,
            }
        )
    return rows, bad


def check_model(cfg: OracleJobConfig, api_key: SecretStr) -> None:
    """One free metadata call: a retired or misspelled model fails before anything is spent."""

    async def check() -> None:
        backend = make_backend(cfg.oracle, api_key.get_secret_value())
        try:
            await backend.check_model()
        finally:
            await backend.aclose()

    asyncio.run(check())


def batch_state_uri(cfg: OracleJobConfig) -> str:
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}.batches.json")


def run_oracle_job(
    cfg: OracleJobConfig, api_key: SecretStr, *, force: bool = False, progress: Progress | None = None
) -> OracleJobResult:
    cfg.oracle.price()  # no price, no cap: refuse before anything else
    step = Step(JOB, run_name(cfg), cfg, force=force)
    if not step.begin():  # committed by this same config: nothing to do
        return step.result
    rows, bad_input = read_prompts(cfg)
    check_model(cfg, api_key)  # a wrong model id fails here: nothing spent, the committed run untouched

    responses = step.table("responses", RESPONSE_SCHEMA, cfg.rows_per_file)
    quarantine = step.quarantine(source="prompts", stage="oracle.input", rows_per_file=cfg.rows_per_file)
    for problem in bad_input:
        quarantine.put_problem(problem)
    outcome: Counter = Counter()

    def put(row: dict[str, Any]) -> None:
        kind = row["oracle_error"]
        outcome[kind or ("cached" if row["cached"] else "answered")] += 1
        if kind is None:
            responses.add(row)
        else:
            detail = row["oracle_error_detail"] or kind
            where = f"id {row['id']}"
            quarantine.put(where, kind, detail, row["prompt"], source_id=row["id"], stage="oracle")

    run_rows = _run_batch if cfg.oracle.mode == "batch" else _run_online
    stats = run_rows(
        cfg,
        api_key,
        rows,
        put,
        lambda s: progress and progress({"rows": sum(outcome.values()), "of": len(rows), **s}),
    )
    if progress:
        progress({"rows": sum(outcome.values()), "of": len(rows), **stats})
    counts = {"prompts": len(rows) + len(bad_input), "bad_input": len(bad_input), **dict(outcome)}
    return step.commit(counts, oracle=stats, ledger=ledger_uri(cfg), cache=cache_root(cfg))


def _run_online(cfg, api_key, rows, put, report) -> dict[str, Any]:
    """Ray Data actors call the oracle; one governor actor shares quota, cap and cache index."""
    import ray

    from crome_ray.oracle.governor import governor_actor

    storage_json = cfg.storage.model_dump_json()
    gov_name = f"governor-{run_name(cfg)}-{uuid.uuid4().hex[:6]}"
    governor = governor_actor(gov_name).remote(
        cfg.oracle.model_dump_json(), ledger_uri(cfg), cache_root(cfg), storage_json
    )
    try:
        ray.get(governor.ping.remote())
        table = pa.Table.from_pylist(
            rows, schema=pa.schema([pa.field(k, t) for k, t in INPUT_COLUMNS.items()])
        )
        # one block per batch, so every actor of the pool gets work
        blocks = [table.slice(i, cfg.batch_size) for i in range(0, max(table.num_rows, 1), cfg.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            OracleStage,
            fn_constructor_kwargs={
                "config_json": cfg.oracle.model_dump_json(),
                "cache_root": cache_root(cfg),
                "storage_json": storage_json,
                "api_key": api_key,
                "governor_name": gov_name,
                "max_output_tokens": cfg.max_output_tokens,
            },
            compute=ray.data.ActorPoolStrategy(
                size=cfg.workers,
                max_concurrent_calls_per_actor=cfg.batches_per_worker,
                enable_true_multi_threading=cfg.batches_per_worker > 1,
            ),
            num_cpus=cfg.worker_cpus,
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
        )
        last = 0.0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                put(row)
            if time.monotonic() - last > 2.0:
                last = time.monotonic()
                report(ray.get(governor.stats.remote()))
        return ray.get(governor.close.remote())
    finally:
        ray.kill(governor)


def _run_batch(cfg, api_key, rows, put, report) -> dict[str, Any]:
    """Gemini Batch API from the driver: no Ray workers needed, the provider does the work."""
    from crome_ray.oracle.batch import BatchRunner, BatchState
    from crome_ray.oracle.cache import LedgerStore, ResponseCache
    from crome_ray.oracle.governor_core import GovernorCore

    o = cfg.oracle
    cache = ResponseCache(cache_root(cfg), o.backend, o.model, cfg.storage)
    core = GovernorCore(o, LedgerStore(ledger_uri(cfg), cfg.storage), cache.scan())
    requests = [request_from_row(r, cfg.max_output_tokens) for r in rows]

    async def go():
        backend = make_backend(o, api_key.get_secret_value())
        state = BatchState.load(LedgerStore(batch_state_uri(cfg), cfg.storage))
        try:
            return await BatchRunner(o, backend, core, cache, state).run(requests)
        finally:
            await backend.aclose()

    for row, r in zip(rows, asyncio.run(go()), strict=True):
        put({**row, **result_columns(r)})
    cache.close()
    return core.close()
