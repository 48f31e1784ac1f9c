"""One worker's oracle calls: cache, then governor, then backend; retries; validation; cache write.

Per request: ask the governor (a cache hit costs nothing; a lease reserves quota and
the worst-case cost), make one attempt, and tell the governor how it went. Transient
failures (429, 5xx, timeouts, connection errors) are retried by tenacity with jittered
exponential backoff that waits at least the server's ``retryDelay``; each attempt goes
through the governor again, because each one can be billed. Answers that are not the
asked-for JSON are billed, recorded and asked again a bounded number of times.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import replace

import tenacity

from crome_ray.oracle.answers import judge_answer
from crome_ray.oracle.backends import OracleBackend
from crome_ray.oracle.cache import ResponseCache
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.governor_core import Decision
from crome_ray.oracle.pricing import call_cost_micros, micros_to_usd, worst_case_micros
from crome_ray.oracle.protocol import ErrorKind, OracleError, OracleRequest, OracleResult


class _WaitAtLeastRetryDelay(tenacity.wait.wait_base):
    """Jittered exponential backoff, but never shorter than the server asked for."""

    def __init__(self, initial: float, maximum: float):
        self.exp = tenacity.wait_exponential_jitter(initial=initial, max=maximum)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        base = self.exp(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return max(base, asked * 1.05) if asked else base


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, OracleError) and exc.kind == ErrorKind.RETRYABLE


class OracleClient:
    def __init__(
        self,
        config: OracleConfig,
        backend: OracleBackend,
        governor,
        cache: ResponseCache,
        owner: str | None = None,
    ):
        self.config, self.backend, self.governor, self.cache = config, backend, governor, cache
        self.price = backend.price
        self.owner = owner or uuid.uuid4().hex[:12]
        self._calls = itertools.count()

    def _sizes(self, req: OracleRequest) -> tuple[int, int, int]:
        """(estimated input tokens, most output tokens, worst-case cost in micro-dollars)."""
        max_out = req.params.max_output_tokens + self.config.thinking_budget
        worst = worst_case_micros(req.worst_input_tokens(), max_out, self.price)
        return req.estimated_input_tokens(), max_out, worst

    async def call(self, req: OracleRequest) -> OracleResult | OracleError:
        """The answer, or the error it ended with (never raises for a request's own failure)."""
        key = req.key(self.backend.name, self.config.model)
        owner = f"{self.owner}-{next(self._calls)}"  # one call's attempts share a lease; twin calls wait
        est_in, max_out, worst = self._sizes(req)
        retry = self.config.retry
        invalid: OracleError | None = None
        for round_ in range(retry.invalid_output_attempts):
            last_round = round_ == retry.invalid_output_attempts - 1
            attempts = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(retry.max_attempts),
                wait=_WaitAtLeastRetryDelay(retry.initial_backoff_s, retry.max_backoff_s),
                retry=tenacity.retry_if_exception(_retryable),
                reraise=True,
            )
            try:
                async for attempt in attempts:
                    with attempt:
                        n = attempt.retry_state.attempt_number
                        outcome = await self._attempt(
                            req,
                            key,
                            owner,
                            est_in,
                            max_out,
                            worst,
                            n,
                            last=n == retry.max_attempts,
                            last_round=last_round,
                        )
            except OracleError as e:
                if e.kind == ErrorKind.RETRYABLE:  # out of attempts
                    kind = ErrorKind.QUOTA_EXHAUSTED if e.status == 429 else ErrorKind.RETRYABLE
                    return OracleError(
                        kind, f"gave up after {retry.max_attempts} attempts: {e}", status=e.status
                    )
                return e
            if isinstance(outcome, OracleError):  # invalid output: billed, asked again
                invalid = outcome
                continue
            return outcome
        assert invalid is not None
        return invalid

    async def _attempt(self, req, key, owner, est_in, max_out, worst, attempt, last, last_round):
        kind, value = await self.governor.begin(key, owner, est_in, max_out, worst)
        if kind is Decision.HIT:
            return replace(self.cache.read(value), cached=True, cost_usd=0.0, attempts=0)
        if kind is Decision.BUDGET:
            raise OracleError(
                ErrorKind.BUDGET_EXHAUSTED,
                f"the next call could cross the ${self.config.budget.cap_usd} cap",
            )
        grant = value
        try:
            answer = await self.backend.generate(req)
        except OracleError as e:
            final = e.kind != ErrorKind.RETRYABLE or last
            await self.governor.fail(grant, e.status == 429, final, e.status is None)
            raise
        except BaseException:
            await self.governor.fail(grant, False, True, True)
            raise
        cost = call_cost_micros(answer.usage, self.price, batch=False)
        billed_out = answer.usage.billed_output_tokens
        outcome = judge_answer(
            answer,
            req.json_schema,
            key=key,
            cost_usd=micros_to_usd(cost),
            backend=self.backend.name,
            model=self.config.model,
            attempts=attempt,
        )
        if isinstance(outcome, OracleError):  # billed, not cached: asked again in the next round
            await self.governor.finish(grant, cost, answer.usage.input_tokens, billed_out, None, last_round)
            return outcome
        location = self.cache.append(outcome)  # persisted before anyone is told it exists
        await self.governor.finish(grant, cost, answer.usage.input_tokens, billed_out, location, True)
        return outcome

    async def call_many(self, requests: list[OracleRequest]) -> list[OracleResult | OracleError]:
        return list(await asyncio.gather(*(self.call(r) for r in requests)))
