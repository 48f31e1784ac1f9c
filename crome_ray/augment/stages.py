"""The augmentation's Ray Data stages: callable classes that set up in ``__init__``.

1. ``OtherRequestStage`` (CPU): embeds each example's request (MiniLM) and picks, from a
   pool of requests drawn from the input, the least similar: IQN's request, RRM's other
   answers, and the control probe's unrelated answer.
2. ``OracleWorkStage`` (I/O): runs ``flow.augment_example`` for each example of a batch, all
   concurrently, on the actor's own asyncio loop. All three phases of an example run in one
   actor on purpose: its ~24 calls share one long prefix (system text, request, both
   answers), and a local vLLM engine's prefix cache only helps calls that reach the same
   engine; one actor also means one engine per actor, not one per phase. Calls the primary
   oracle could not serve (per ``fallback.policy``) go to the fallback oracle: a local
   engine's ``OracleServer`` actors (``engine.engines`` of them, with the engine's GPUs),
   one example's calls to one engine; a remote API's caller opened in the actor on first
   need.
3. ``BaselineFilterStage`` (CPU or GPU): scores the augmented pairs with the baseline reward
   model and moves those it is already sure about to the ``filtered`` side table.

Between stages a batch is a table of records: ``table`` (which output table), ``source_id``
and ``row`` (the row as JSON), so the driver only routes rows to their writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import zlib
from typing import Any

import numpy as np
import pyarrow as pa

from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentConfig, without_oracle
from crome_ray.augment.flow import Answer, Other, Records, Settings, augment_example
from crome_ray.augment.neutrals import least_similar_in_pool
from crome_ray.augment.pairs import keep_after_filter
from crome_ray.augment.plan import PlannedTask
from crome_ray.config import StorageConfig
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.protocol import OracleError, OracleResult
from crome_ray.oracle.stage import ActorLoop, OracleCaller, request_from_row
from crome_ray.records import AUGMENTED_PAIR_SCHEMA

RECORD_SCHEMA = pa.schema(
    [pa.field("table", pa.string()), pa.field("source_id", pa.string()), pa.field("row", pa.string())]
)
OTHER_COLUMNS = {
    "other_question": pa.string(),
    "other_chosen": pa.string(),
    "other_second": pa.string(),
    "other_similarity": pa.float64(),
    "other_method": pa.string(),
}


def records_table(records: list[tuple[str, str, dict[str, Any]]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"table": t, "source_id": sid, "row": json.dumps(row)} for t, sid, row in records],
        schema=RECORD_SCHEMA,
    )


class OtherRequestStage:
    def __init__(
        self, embedder: str, storage_json: str, pool: list, candidates: int, seed: int, max_tokens: int = 64,
        threads: int = 1,
    ):  # fmt: skip
        import ray
        import torch

        from crome_ray.augment.embed import Embedder
        from crome_ray.models import resolve_model

        torch.set_num_threads(threads)
        storage = StorageConfig.model_validate_json(storage_json)
        self.embed = Embedder(resolve_model(embedder, storage=storage), max_length=max_tokens)
        doc = ray.get(pool[0])  # {"questions", "chosen", "embeddings"}: made once by the driver
        self.questions, self.chosen = doc["questions"], doc["chosen"]
        self.pool = np.asarray(doc["embeddings"], dtype=np.float32)
        self.candidates, self.seed = candidates, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        prompts = batch.column("prompt").to_pylist()
        ids = batch.column("pair_id").to_pylist()
        picks = least_similar_in_pool(
            self.embed(prompts),
            prompts,
            ids,
            self.pool,
            self.questions,
            candidates=self.candidates,
            seed=self.seed,
        )
        cols: dict[str, list] = {k: [] for k in OTHER_COLUMNS}
        for best, second in picks:
            cols["other_question"].append(self.questions[best.index])
            cols["other_chosen"].append(self.chosen[best.index])
            cols["other_second"].append(self.chosen[second] if second is not None else None)
            cols["other_similarity"].append(best.similarity)
            cols["other_method"].append(best.method)
        for k, typ in OTHER_COLUMNS.items():
            batch = batch.append_column(pa.field(k, typ), pa.array(cols[k], type=typ))
        return batch


def answer_of(r: OracleResult | OracleError, backend: str, model: str, before: str | None = None) -> Answer:
    if isinstance(r, OracleError):
        detail = f"{r}" + (f" | raw: {r.raw[:300]}" if r.raw else "")
        if before:
            detail = f"{before}; then {backend} {model}: {detail}"
        return Answer(error=str(r.kind), detail=detail, backend=backend, model=model)
    return Answer(r.parsed, None, None, r.backend, r.model, r.cost_usd, r.key, r.cached)


class OracleWorkStage:
    def __init__(
        self,
        config_json: str,
        primary: dict[str, Any],
        fallback: dict[str, Any] | None,
        fallback_kinds: list[str],
        control_ids: list[str],
        embedder: str | None,
        fallback_servers: list | None = None,
        oracle_ids: list[str] | None = None,
    ):
        """``primary``/``fallback``: ``OracleCaller.open``'s arguments (config_json, cache_root,
        storage_json, api_key, governor_name). A local fallback engine is not opened here but
        served by ``fallback_servers`` (``OracleServer`` actors, one engine each); ``fallback``
        still names its backend and model."""
        cfg = AugmentConfig.model_validate_json(config_json)
        self.settings = Settings(cfg.run_tasks(), cfg.checks, cfg.leakage)
        # oracle_examples: the examples past the first N get their original pair and IQN tie only
        self.oracle_ids = None if oracle_ids is None else frozenset(oracle_ids)
        self.no_oracle = Settings(without_oracle(cfg.tasks), cfg.checks, cfg.leakage)
        self.rrm_or_iqn = cfg.tasks.rrm or cfg.tasks.iqn
        self.controls = frozenset(control_ids)
        self.fallback_args, self.fallback_kinds = fallback, frozenset(fallback_kinds)
        self.servers = list(fallback_servers or [])
        if fallback is not None:
            fb = OracleConfig.model_validate_json(fallback["config_json"])
            self.fallback_name = (fb.backend, fb.model)
        self._loop = ActorLoop()
        # None: the run plans no oracle call (IQN only, RRM), so no backend or engine is made
        self.primary = self._loop.run(OracleCaller.open(**primary)) if primary else None
        self.fallback: OracleCaller | None = None
        self._loop.close_at_exit(self._aclose)  # a local engine shut down before the process ends
        self._opening: asyncio.Lock | None = None
        self.embedder, self._embed_lock = None, threading.Lock()
        if embedder is not None:
            from crome_ray.augment.embed import Embedder
            from crome_ray.models import resolve_model

            self.embedder = Embedder(resolve_model(embedder, storage=cfg.storage))

    async def _fallback(self) -> OracleCaller:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.fallback is None:
                self.fallback = await OracleCaller.open(**self.fallback_args)
        return self.fallback

    async def ask(self, tasks: list[PlannedTask]) -> dict[str, Answer]:
        p = self.primary
        if p is None:
            raise RuntimeError(f"{len(tasks)} oracle calls asked of a run that planned none")
        rows = [request_from_row(t.row(), t.task.max_output_tokens) for t in tasks]
        results = await p.call_many(rows)
        out, again = {}, []
        for t, req, r in zip(tasks, rows, results, strict=True):
            if isinstance(r, OracleError) and r.kind in self.fallback_kinds and self.fallback_args:
                again.append((t, req, f"{p.backend.name} {p.config.model}: {r.kind}"))
            else:
                out[t.id] = answer_of(r, p.backend.name, p.config.model)
        if again:
            requests = [req for _, req, _ in again]
            if self.servers:  # one example's calls to one engine: its prefix cache stays useful
                server = self.servers[zlib.crc32(tasks[0].example_id.encode()) % len(self.servers)]
                results = await server.call_many.remote(requests)
            else:
                results = await (await self._fallback()).call_many(requests)
            backend, model = self.fallback_name
            for (t, _, before), r in zip(again, results, strict=True):
                out[t.id] = answer_of(r, backend, model, before)
        return out

    async def embed(self, texts: list[str]) -> list:
        def run():
            with self._embed_lock:  # one forward pass at a time on this actor's model
                return list(self.embedder(texts))

        return await asyncio.to_thread(run)

    async def _batch(self, rows: list[dict[str, Any]]) -> list[Records]:
        async def one(row: dict[str, Any]) -> Records:
            # the augmented pairs point back at the source row, as the original pair does
            ex = P.Example(row["source_id"], row["prompt"], row["chosen"], row["rejected"])
            if row.get("label") != "chosen":  # a tie in the input: passed on as it is
                out = Records()
                out.add("pairs", {**passthrough(row)})
                return out
            other = None
            if row.get("other_question") is not None:
                other = Other(
                    row["other_question"],
                    row["other_chosen"],
                    row["other_similarity"],
                    row["other_method"],
                    row.get("other_second"),
                )
            return await augment_example(
                ex,
                self.ask,
                self.settings if self.oracle_ids is None or ex.id in self.oracle_ids else self.no_oracle,
                other=other,
                control=ex.id in self.controls,
                embed=self.embed if self.embedder is not None else None,
                original=passthrough(row),
            )

        return await asyncio.gather(*(one(r) for r in rows))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        results = self._loop.run(self._batch(rows))
        records = []
        for row, rec in zip(rows, results, strict=True):
            records += [(t, row["source_id"], r) for t, r in rec.rows]
            records.append(("stats", row["source_id"], dict(rec.stats)))
        return records_table(records)

    async def _aclose(self) -> None:
        for caller in (self.primary, self.fallback):
            if caller is not None:
                await caller.aclose()

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort: the process is going away
            self._loop.close()


def passthrough(row: dict[str, Any]) -> dict[str, Any]:
    """An input pair as a training-table row (the original of an example, or a tie passed on)."""
    out = {name: row.get(name) for name in AUGMENTED_PAIR_SCHEMA.names}
    return out | {"request_keys": [], "cost_usd": 0.0}


class BaselineFilterStage:
    def __init__(self, tau: float, **scorer: Any):
        """``scorer``: ``train.score.actor_scorer``'s arguments (a ``scorer_pool`` gives them)."""
        from crome_ray.train.score import actor_scorer

        self.scorer = actor_scorer(**scorer)
        self.tau = tau

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = batch.column("table").to_pylist()
        rows = [json.loads(r) for r in batch.column("row").to_pylist()]
        idx = [i for i, t in enumerate(tables) if t == "pairs"]
        if idx:
            prompts = [rows[i]["prompt"] for i in idx]
            a = self.scorer.score(prompts, [rows[i]["chosen"] for i in idx])
            b = self.scorer.score(prompts, [rows[i]["rejected"] for i in idx])
            for i, ra, rb in zip(idx, a, b, strict=True):
                p = 1.0 / (1.0 + math.exp(-(rb - ra)))  # P_base(B ≻ A)
                rows[i]["baseline_p"] = round(p, 6)
                if rows[i]["kind"] != "original" and not keep_after_filter(p, rows[i]["label"], self.tau):
                    tables[i] = "filtered"
        return pa.Table.from_pydict(
            {
                "table": tables,
                "source_id": batch.column("source_id").to_pylist(),
                "row": [json.dumps(r) for r in rows],
            },
            schema=RECORD_SCHEMA,
        )
