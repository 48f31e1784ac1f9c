"""Gemini Batch API mode: half price, no per-minute quota, answers in minutes to hours.

Runs in the driver (the provider does the work). Requests not in the cache are
submitted as inline batch jobs of ``chunk`` requests; before each job is created, its
worst-case cost (at the batch price) is reserved against the cap and its intent is
written to the run's batch state with a unique display name. After ``create``
returns, the job's name is recorded too. A restarted run reads that state: jobs it
knows are polled, not resubmitted; an intent without a name (a crash inside
``create``) is matched by display name among the provider's jobs, so it is adopted
rather than paid for twice. Collected answers go to the response cache, priced at
the batch rate; the job is then marked collected.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from crome_ray.oracle.answers import judge_answer
from crome_ray.oracle.budget import Reservation
from crome_ray.oracle.cache import LedgerStore, ResponseCache
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.gemini import GeminiBackend, answer_from_response, classify
from crome_ray.oracle.governor_core import GovernorCore
from crome_ray.oracle.pricing import call_cost_micros, micros_to_usd, worst_case_micros
from crome_ray.oracle.protocol import ErrorKind, OracleError, OracleRequest, OracleResult

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@dataclass
class BatchState:
    """What was submitted, persisted as JSON beside the run (``<run>.batches.json``)."""

    store: LedgerStore
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, store: LedgerStore) -> BatchState:
        doc = store.load() or {}
        return cls(store, doc.get("jobs", []))

    def save(self) -> None:
        self.store.save({"jobs": self.jobs})


class BatchRunner:
    def __init__(
        self,
        config: OracleConfig,
        backend: GeminiBackend,
        governor: GovernorCore,
        cache: ResponseCache,
        state: BatchState,
        chunk: int = 1000,
    ):
        self.config, self.backend, self.core, self.cache, self.state = config, backend, governor, cache, state
        self.price = backend.price
        self.chunk = chunk
        self.submitted = 0
        self._mine: set[str] = set()  # display names of jobs this process created (and reserved for)

    def _worst(self, req: OracleRequest) -> int:
        """Micro-dollars, at the batch price."""
        max_out = req.params.max_output_tokens + self.config.thinking_budget
        return worst_case_micros(req.worst_input_tokens(), max_out, self.price, batch=True)

    async def run(self, requests: list[OracleRequest]) -> list[OracleResult | OracleError]:
        """Submit what the cache lacks, wait for the jobs, return one outcome per request."""
        results = await self.submit(requests)
        return await self.collect(requests, results)

    async def submit(self, requests: list[OracleRequest]) -> dict[str, OracleResult | OracleError]:
        """Cache hits and refusals now; everything else submitted as (or found in) a batch job."""
        types = self.backend._types
        client = self.backend.client
        keyed = {r.key(self.backend.name, self.config.model): r for r in requests}
        results: dict[str, OracleResult | OracleError] = {}
        for key in keyed:
            if key in self.core.index:
                results[key] = replace(
                    self.cache.read(self.core.index[key]), cached=True, cost_usd=0.0, attempts=0
                )
                self.core.counts["hits"] += 1
        await self._adopt_orphans(client)
        known = {k for job in self.state.jobs if not job.get("collected") for k in job["keys"]}
        todo = [k for k in keyed if k not in results and k not in known]
        for i in range(0, len(todo), self.chunk):
            keys, reservations = [], []
            for k in todo[i : i + self.chunk]:
                r = self.core.budget.reserve(self._worst(keyed[k]))
                if r is None:
                    results[k] = OracleError(
                        ErrorKind.BUDGET_EXHAUSTED, "the batch could cross the dollar cap"
                    )
                else:
                    keys.append(k)
                    reservations.append(r.amount)
            if not keys:
                continue
            job = {
                "display_name": f"crome-{uuid.uuid4().hex[:12]}",
                "keys": keys,
                "reserved": reservations,  # micro-dollars
                "name": None,
                "collected": False,
            }
            self.state.jobs.append(job)
            self._mine.add(job["display_name"])
            self.state.save()  # intent first: a crash inside create() is adopted, not resubmitted
            src = [
                types.InlinedRequest(
                    contents=keyed[k].prompt,
                    config=self.backend.generation_config(keyed[k]),
                    metadata={"key": k},
                )
                for k in keys
            ]
            try:
                created = await client.aio.batches.create(
                    model=self.config.model,
                    src=src,
                    config=types.CreateBatchJobConfig(display_name=job["display_name"]),
                )
            except Exception as e:
                err = classify(e)
                self.state.jobs.remove(job)
                self.state.save()
                for k, amount in zip(keys, reservations, strict=True):
                    self.core.budget.settle(Reservation(amount), 0)
                    results[k] = err
                continue
            job["name"] = created.name
            self.state.save()
            self.submitted += len(keys)
        return results

    async def collect(
        self, requests: list[OracleRequest], results: dict[str, OracleResult | OracleError]
    ) -> list[OracleResult | OracleError]:
        keyed = {r.key(self.backend.name, self.config.model): r for r in requests}
        await self._collect(self.backend.client, keyed, results)
        missing = OracleError(ErrorKind.FATAL, "no answer in the batch output")
        return [results.get(k) or missing for k in keyed]

    async def _adopt_orphans(self, client) -> None:
        orphans = [j for j in self.state.jobs if j["name"] is None]
        if not orphans:
            return
        by_display = {}
        pager = await client.aio.batches.list()
        async for job in pager:
            by_display[job.display_name] = job.name
        for j in orphans:
            if j["display_name"] in by_display:
                j["name"] = by_display[j["display_name"]]
            else:  # create() never reached the provider: nothing was billed
                self.state.jobs.remove(j)
        self.state.save()

    async def _collect(self, client, keyed: dict[str, OracleRequest], results: dict[str, Any]) -> None:
        # Jobs submitted by an earlier (crashed) attempt were reserved inside the ledger's allowance,
        # which this attempt counts as spent already; only this attempt's own reservations are settled.
        for job in [j for j in self.state.jobs if not j.get("collected") and j["name"]]:
            while True:
                bj = await client.aio.batches.get(name=job["name"])
                state = str(getattr(bj.state, "name", bj.state))
                if state in TERMINAL:
                    break
                await asyncio.sleep(self.config.batch_poll_s)
            mine = job["display_name"] in self._mine
            answers = {}
            if state == "JOB_STATE_SUCCEEDED" and bj.dest is not None:
                for item in bj.dest.inlined_responses or []:
                    key = (item.metadata or {}).get("key")
                    if key and item.response is not None:
                        answers[key] = answer_from_response(item.response, 0.0)
            for key, amount in zip(job["keys"], job["reserved"], strict=True):
                ans = answers.get(key)
                if ans is None:
                    results[key] = OracleError(
                        ErrorKind.RETRYABLE,
                        f"batch {job['name']} ended {state} without an answer for this request",
                    )
                    cost = 0
                else:
                    cost = call_cost_micros(ans.usage, self.price, batch=True)
                    schema = keyed[key].json_schema if key in keyed else None
                    outcome = judge_answer(
                        ans,
                        schema,
                        key=key,
                        cost_usd=micros_to_usd(cost),
                        backend=self.backend.name,
                        model=self.config.model,
                    )
                    if isinstance(outcome, OracleResult):
                        self.core.index[key] = self.cache.append(outcome)
                    else:
                        self.core.counts["invalid_output"] += 1
                    results[key] = outcome
                if mine:
                    self.core.budget.settle(Reservation(amount), cost)
            job["collected"] = True
            self.state.save()
