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
import json
import threading
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from crome_ray.config import OracleConfig, StorageConfig
from crome_ray.oracle.backends import make_backend
from crome_ray.oracle.cache import ResponseCache
from crome_ray.oracle.client import OracleClient
from crome_ray.oracle.governor import RemoteGovernor
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


class OracleStage:
    def __init__(
        self,
        config_json: str,
        cache_root: str,
        storage_json: str | None,
        api_key: SecretStr,
        governor_name: str,
        namespace: str = "crome-ray",
        max_output_tokens: int = 1024,
    ):
        import ray

        self.config = OracleConfig.model_validate_json(config_json)
        storage = StorageConfig.model_validate_json(storage_json) if storage_json else None
        self.cache = ResponseCache(cache_root, self.config.backend, self.config.model, storage)
        handle = ray.get_actor(governor_name, namespace=namespace)
        governor = RemoteGovernor(handle, window_slack_s=self.config.quota.window_slack_s)
        self.max_output_tokens = max_output_tokens
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="oracle-loop")
        self._thread.start()
        # the SDK's aiohttp session belongs to the loop it is used on: build the backend there
        backend = asyncio.run_coroutine_threadsafe(self._make_backend(api_key), self._loop).result()
        self.backend = backend
        if hasattr(backend, "on_engine_started"):  # a local engine: its start-up time, reported apart
            backend.on_engine_started = lambda info: handle.note_engine.remote(info)
        self.governor = governor
        self.client = OracleClient(self.config, backend, governor, self.cache)

    async def _make_backend(self, api_key: SecretStr):
        return make_backend(self.config, api_key.get_secret_value())

    async def _serve(self, requests: list[OracleRequest]) -> list[OracleResult | OracleError]:
        results = await self.client.call_many(requests)
        await self.governor.flush()  # the batch's costs and tokens are in the governor before its rows leave
        return results

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        requests = [request_from_row(r, self.max_output_tokens) for r in rows]
        results = asyncio.run_coroutine_threadsafe(self._serve(requests), self._loop).result()
        cols: dict[str, list] = {k: [] for k in RESULT_COLUMNS}
        for r in results:
            for k, v in result_columns(r, self.backend.name, self.config.model).items():
                cols[k].append(v)
        for k, typ in RESULT_COLUMNS.items():
            batch = batch.append_column(pa.field(k, typ), pa.array(cols[k], type=typ))
        return batch

    def __del__(self):
        try:
            self.cache.close()
            # the last settlements reach the governor, and no task is left pending on the loop
            asyncio.run_coroutine_threadsafe(self.governor.aclose(), self._loop).result(timeout=6)
            asyncio.run_coroutine_threadsafe(self.backend.aclose(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        except Exception:
            pass  # best effort: the process is going away
