"""The Ray Data stage that calls the oracle: a callable class for ``map_batches``.

Each actor builds its backend, cache writer and a handle to the run's governor once
(``__init__``), and runs an asyncio loop on a thread of its own; ``__call__`` sends a
batch's requests concurrently (the governor decides how many go at once) and adds
the answers as columns. Several ``__call__``s may run at once on Ray Data's threads
(``batches_per_worker``): each only hands its batch to the one loop and waits, so every
call still runs on that loop. A request's own failure is a value in the ``oracle_error``
column, never an exception that would fail the batch.

Input columns: ``prompt``; optional ``system``, ``schema`` (JSON text), ``max_output_tokens``.
Output columns: see ``RESULT_COLUMNS``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from crome_ray.config import StorageConfig
from crome_ray.oracle.backends import make_backend
from crome_ray.oracle.cache import ResponseCache
from crome_ray.oracle.client import OracleClient
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.governor import RemoteGovernor
from crome_ray.oracle.governor_core import heartbeat_seconds
from crome_ray.oracle.protocol import GenerationParams, OracleError, OracleRequest, OracleResult

RESULT_COLUMNS = {
    "response": pa.string(),
    "response_json": pa.string(),
    "oracle_error": pa.string(),  # an ErrorKind, null when answered
    "oracle_error_detail": pa.string(),
    "cost_usd": pa.float64(),
    "cached": pa.bool_(),
    "attempts": pa.int32(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "backend": pa.string(),  # what served (or last tried) the row
    "model": pa.string(),
}


def request_from_row(row: dict[str, Any], default_max_tokens: int) -> OracleRequest:
    schema = row.get("schema")
    return OracleRequest(
        prompt=row["prompt"],
        system=row.get("system"),
        json_schema=json.loads(schema) if isinstance(schema, str) and schema else None,
        params=GenerationParams(max_output_tokens=int(row.get("max_output_tokens") or default_max_tokens)),
    )


def result_columns(r: OracleResult | OracleError, backend: str, model: str) -> dict[str, Any]:
    """One outcome as the values of ``RESULT_COLUMNS`` (``backend``/``model``: who was asked)."""
    if isinstance(r, OracleError):
        values = [
            None,
            None,
            str(r.kind),
            f"{r}" + (f" | raw: {r.raw}" if r.raw else ""),
            0.0,
            False,
            0,
            0,
            0,
            backend,
            model,
        ]
    else:
        values = [
            r.text,
            json.dumps(r.parsed) if r.parsed is not None else None,
            None,
            None,
            r.cost_usd,
            r.cached,
            r.attempts,
            r.usage.input_tokens,
            r.usage.billed_output_tokens,
            r.backend,
            r.model,
        ]
    return dict(zip(RESULT_COLUMNS, values, strict=True))


class OracleCaller:
    """An oracle client inside a Ray actor: backend, cache writer and a handle on the run's
    governor, all bound to one asyncio loop. Build it on that loop with ``open``."""

    def __init__(self, config: OracleConfig, backend, cache: ResponseCache, governor: RemoteGovernor):
        self.config, self.backend, self.cache, self.governor = config, backend, cache, governor
        self.client = OracleClient(config, backend, governor, cache)

    @classmethod
    async def open(
        cls,
        config_json: str,
        cache_root: str,
        storage_json: str | None,
        api_key: SecretStr,
        governor_name: str,
        namespace: str = "crome-ray",
    ) -> OracleCaller:
        import ray

        config = OracleConfig.model_validate_json(config_json)
        storage = StorageConfig.model_validate_json(storage_json) if storage_json else None
        cache = ResponseCache(cache_root, config.backend, config.model, storage)
        handle = ray.get_actor(governor_name, namespace=namespace)
        governor = RemoteGovernor(
            handle, window_slack_s=config.quota.window_slack_s, heartbeat_s=heartbeat_seconds(config)
        )
        # the SDK's aiohttp session belongs to the loop it is used on: this one
        backend = make_backend(config, api_key.get_secret_value())
        if hasattr(backend, "on_engine_started"):  # a local engine: its start-up time, reported apart
            backend.on_engine_started = lambda info: handle.note_engine.remote(info)
        return cls(config, backend, cache, governor)

    async def call_many(self, requests: list[OracleRequest]) -> list[OracleResult | OracleError]:
        results = await self.client.call_many(requests)
        await self.governor.flush()  # the costs and tokens are in the governor before the rows leave
        return results

    async def aclose(self) -> None:
        self.cache.close()
        try:
            # the last settlements reach the governor, and no task is left pending on the loop
            await asyncio.wait_for(self.governor.aclose(), 6)
        finally:  # a local engine is shut down even when the governor did not answer
            await asyncio.wait_for(self.backend.aclose(), 30)


class ActorLoop:
    """An asyncio loop on a thread of its own, for a Ray Data callable class: its ``__call__``s
    (several at once on Ray Data's threads) hand their work to this one loop and wait.

    ``close_at_exit`` closes the actor's callers on that loop once, at the latest when its
    process exits. Ray Data deletes its callable when the actor pool winds down, but something
    else may still hold it, and then ``__del__`` runs only as the interpreter tears its modules
    down: too late for a local vLLM engine, whose own ``__del__`` then fails
    (``TypeError: 'NoneType' object is not callable``). An ``atexit`` hook runs before that
    teardown. (Ray kills the actor's child processes before it runs ``__ray_shutdown__``, so the
    engine's processes are gone by then: ``oracle.resource_tracker`` keeps their clean-up quiet.)"""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="oracle-loop")
        self._thread.start()
        self._closers: list[weakref.WeakMethod] = []
        self._closed = False

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    def close_at_exit(self, closer: Callable[[], Awaitable[None]]) -> None:
        """``closer()`` (a bound method) runs on this loop at ``close()`` or when the process
        exits, once. Held weakly: its object can still be freed, and its ``__del__`` close the
        loop when Ray Data lets go of it (``__ray_shutdown__``), before Ray ends the process."""
        if not self._closers:
            atexit.register(self.close)
        self._closers.append(weakref.WeakMethod(closer))  # type: ignore[arg-type]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for ref in self._closers:
                closer = ref()
                if closer is not None:
                    self.run(closer(), timeout=40)
        finally:
            self.stop()


class OracleServer:
    """One local engine that many actors call: a plain Ray actor, sized by the engine's own
    settings (its GPUs included), that the augmentation's oracle actors send their fallback
    calls to. Without it every oracle actor would open an engine of its own, on whatever node
    it runs, CPU nodes included: a cluster then holds ``workers`` copies of the model where
    ``engine.engines`` were asked for. The engine starts on the first call, so a run that never
    falls back never loads it. Ray actors do this scheduling and placement; what is ours is
    the lazy, shared opening of an ``OracleCaller`` (cache, governor, engine) inside one."""

    def __init__(self, caller_args: dict[str, Any]):
        self.args, self.caller = caller_args, None
        self._opening: asyncio.Lock | None = None

    async def call_many(self, requests: list[OracleRequest]) -> list[OracleResult | OracleError]:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.caller is None:
                self.caller = await OracleCaller.open(**self.args)
        return await self.caller.call_many(requests)

    async def close(self) -> None:
        if self.caller is not None:
            await self.caller.aclose()
            self.caller = None


class OracleStage:
    """The oracle job's Ray Data stage: each row's request through one ``OracleCaller``, opened with
    ``caller_args`` (``OracleCaller.open``'s arguments) on the actor's own loop."""

    def __init__(self, caller_args: dict[str, Any], max_output_tokens: int = 1024):
        self.max_output_tokens = max_output_tokens
        self._loop = ActorLoop()
        self.caller = self._loop.run(OracleCaller.open(**caller_args))
        self._loop.close_at_exit(self.caller.aclose)
        self.config, self.backend = self.caller.config, self.caller.backend

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        requests = [request_from_row(r, self.max_output_tokens) for r in rows]
        results = self._loop.run(self.caller.call_many(requests))
        cols: dict[str, list] = {k: [] for k in RESULT_COLUMNS}
        for r in results:
            for k, v in result_columns(r, self.backend.name, self.config.model).items():
                cols[k].append(v)
        for k, typ in RESULT_COLUMNS.items():
            batch = batch.append_column(pa.field(k, typ), pa.array(cols[k], type=typ))
        return batch

    def __del__(self):
        with contextlib.suppress(Exception):  # best effort: the process is going away
            self._loop.close()


def stage_resources(
    oracle: OracleConfig, *, workers: int, worker_cpus: float, batches_per_worker: int
) -> dict[str, Any]:
    """Actors and their resources: a local engine per actor, sized from ``oracle.engine``;
    a remote API's callers are light (``workers`` of ``worker_cpus`` each), many batches in
    flight each."""
    import ray

    if oracle.backend != "vllm":
        return {"size": workers, "concurrency": batches_per_worker, "num_cpus": worker_cpus, "num_gpus": 0}
    e = oracle.engine
    gpus = e.device == "cuda" or (e.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    return {
        "size": e.engines,
        "concurrency": batches_per_worker,
        "num_cpus": e.cpus_per_engine,
        "num_gpus": e.tensor_parallel_size if gpus else 0,
    }
