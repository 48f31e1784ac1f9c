"""A Gemini API simulator: an aiohttp server speaking the REST API google-genai uses.

Tests, benchmarks and the demo point the real ``google-genai`` client at it
(``HttpOptions(base_url=...)``). It speaks:

- ``GET  /{version}/models/{model}``: model metadata; 404 for models it does not serve
  (a retired model id).
- ``POST /{version}/models/{model}:generateContent``: an answer that satisfies the
  request's JSON schema (``responseJsonSchema`` or ``responseSchema``), derived
  deterministically from the request, with ``usageMetadata``. The augmentation's tasks
  get answers made from the prompt's own texts (``oracle.simulated_tasks``).
- ``POST /{version}/models/{model}:batchGenerateContent``, ``GET /{version}/batches``
  and ``GET /{version}/batches/{id}``: inline Batch API jobs that finish after a delay.
- ``GET /_sim/stats``: what it received (no API key in it).

It enforces an RPM and input-TPM quota per API key over a sliding window and answers
over-quota requests with 429 ``RESOURCE_EXHAUSTED`` plus a ``RetryInfo.retryDelay``,
as Gemini does (with ``retry_hint="header"``, a ``Retry-After`` header instead).
Faults are injected with set probabilities: 500/503, hangs (client timeouts), capacity
429s (not caused by the caller's rate), malformed and truncated JSON; ``first_429s``
answers the first requests with a 429 whatever the rate. Latency is lognormal. Every
answered (and every billed) request body is counted, so a test can assert that nothing
was answered or billed twice, and every arrival is timed (``SimStats.arrivals``), so a
test can see when a request was retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

from crome_ray.oracle.simulated_tasks import task_answer

DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash")
WORDS = [
    "accuracy",
    "clarity",
    "answer",
    "concise",
    "complete",
    "detail",
    "example",
    "evidence",
    "format",
    "helpful",
    "honest",
    "instruction",
    "logic",
    "precise",
    "reason",
    "relevant",
    "safety",
    "specific",
    "step",
    "structure",
    "style",
    "support",
    "tone",
    "useful",
    "verify",
    "claim",
    "context",
]


@dataclass(frozen=True)
class SimConfig:
    models: tuple[str, ...] = DEFAULT_MODELS
    api_key: str | None = None  # if set, any other key is refused (400 API_KEY_INVALID)
    rpm: int | None = None
    tpm: int | None = None  # input tokens per minute
    window_s: float = 60.0
    latency_median_s: float = 0.02
    latency_sigma: float = 0.5
    p_500: float = 0.0
    p_503: float = 0.0
    p_hang: float = 0.0  # never answer in time: the client's timeout fires
    hang_s: float = 30.0
    p_capacity_429: float = 0.0  # a 429 the caller's rate did not cause
    capacity_retry_delay_s: float = 1.0
    first_429s: int = 0  # the first N generateContent requests get a capacity 429, whatever the rate
    retry_hint: Literal["body", "header"] = "body"  # a 429's delay: RetryInfo in the body, or Retry-After
    p_malformed: float = 0.0  # text that is not JSON
    p_truncated: float = 0.0  # JSON cut off mid-way, finishReason MAX_TOKENS
    p_copy: float = 0.0  # an augmentation rewrite or a paraphrase handed back unchanged (simulated_tasks)
    p_false_pass: float = 0.0  # a verification that passes a control: an unchanged or unrelated "rewrite"
    thinking_tokens: int = 0
    batch_delay_s: float = 1.0
    seed: int = 0


@dataclass
class SimStats:
    requests: int = 0
    answered: int = 0
    quota_429: int = 0
    capacity_429: int = 0
    server_errors: int = 0
    hangs: int = 0
    malformed: int = 0
    truncated: int = 0
    not_found: int = 0
    unauthorized: int = 0
    model_gets: int = 0
    batch_jobs: int = 0
    batch_requests: int = 0
    abandoned: int = 0  # produced after the client gave up (timeout): maybe billed, never delivered
    input_tokens: int = 0  # billed tokens, abandoned answers included
    output_tokens: int = 0
    answered_bodies: Counter = field(default_factory=Counter)
    billed_bodies: Counter = field(default_factory=Counter)  # answered or abandoned: billed either way
    answer_times: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, body digest)

    def summary(self) -> dict[str, Any]:
        kept_out = ("answered_bodies", "billed_bodies", "answer_times", "arrivals")
        out = {k: v for k, v in asdict(self).items() if k not in kept_out}
        out["answered_twice"] = sum(1 for n in self.answered_bodies.values() if n > 1)
        out["billed_twice"] = sum(1 for n in self.billed_bodies.values() if n > 1)
        out["distinct_answered"] = len(self.answered_bodies)
        return out


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return (
            [node["text"]]
            if isinstance(node.get("text"), str)
            else [t for v in node.values() for t in _texts(v)]
        )
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return []


def answer_for_schema(schema: dict[str, Any] | None, rng: random.Random, depth: int = 0) -> Any:
    """A value that satisfies ``schema`` (JSON Schema or Gemini's OpenAPI subset)."""
    if not schema:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        return answer_for_schema(schema["anyOf"][0], rng, depth)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        props = schema.get("properties", {})
        return {k: answer_for_schema(v, rng, depth + 1) for k, v in props.items()}
    if kind == "array":
        lo, hi = schema.get("minItems", 1), schema.get("maxItems", max(schema.get("minItems", 1), 3))
        return [
            answer_for_schema(schema.get("items", {}), rng, depth + 1) for _ in range(rng.randint(lo, hi))
        ]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 10)))
    if kind == "number":
        lo, hi = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return round(rng.uniform(lo, hi), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    n = rng.randint(3, 12) if depth else rng.randint(12, 40)
    return " ".join(rng.choice(WORDS) for _ in range(n))


class _Window:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def check(self, amount: int, now: float) -> float:
        """0 if ``amount`` fits now, else seconds until it would."""
        while self.events and self.events[0][0] <= now - self.window:
            self.total -= self.events.popleft()[1]
        if self.total + amount <= self.limit:
            return 0.0
        excess, freed = self.total + amount - self.limit, 0
        for t, a in self.events:
            freed += a
            if freed >= excess:
                return t + self.window - now
        return self.window

    def add(self, amount: int, now: float) -> None:
        self.events.append((now, amount))
        self.total += amount


class GeminiSimulator:
    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.stats = SimStats()
        self._rng = random.Random(self.config.seed)
        self._windows: dict[str, tuple[_Window | None, _Window | None]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._started = time.monotonic()

    # --- the app ---------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_get("/{version}/models/{model}", self._get_model)
        app.router.add_post("/{version}/models/{call}", self._post_model)
        app.router.add_get("/{version}/batches", self._list_batches)
        app.router.add_get("/{version}/batches/{batch}", self._get_batch)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        out = self.stats.summary()
        if request.query.get("times"):
            out["answer_times"] = self.stats.answer_times
        return web.json_response(out)

    @staticmethod
    def _error(code: int, status: str, message: str, details: list | None = None) -> web.Response:
        body = {"error": {"code": code, "message": message, "status": status}}
        if details:
            body["error"]["details"] = details
        return web.json_response(body, status=code)

    def _auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key or (self.config.api_key is not None and key != self.config.api_key):
            self.stats.unauthorized += 1
            return self._error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            )
        return None

    def _model(self, name: str) -> str | None:
        name = name.removeprefix("models/")
        return name if name in self.config.models else None

    async def _get_model(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.stats.model_gets += 1
        model = self._model(request.match_info["model"])
        if model is None:
            self.stats.not_found += 1
            return self._error(
                404,
                "NOT_FOUND",
                f"models/{request.match_info['model']} is not found for API "
                "version v1, or is not supported for generateContent.",
            )
        return web.json_response(
            {
                "name": f"models/{model}",
                "version": "001",
                "displayName": model,
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"],
            }
        )

    async def _post_model(self, request: web.Request) -> web.Response:
        call = request.match_info["call"]
        model_name, _, method = call.partition(":")
        if (denied := self._auth(request)) is not None:
            return denied
        model = self._model(model_name)
        if model is None:
            self.stats.not_found += 1
            return self._error(404, "NOT_FOUND", f"models/{model_name} is not found for API version v1.")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if method == "generateContent":
            return await self._generate(request, model, body)
        if method == "batchGenerateContent":
            return self._create_batch(model, body)
        return self._error(404, "NOT_FOUND", f"unknown method {method}")

    # --- generateContent -------------------------------------------------------------------
    async def _generate(self, request: web.Request, model: str, body: dict[str, Any]) -> web.Response:
        cfg, st = self.config, self.stats
        st.requests += 1
        body = lower_camel(body)  # the API reads both spellings; so does the simulator
        digest = _digest(body)
        st.arrivals.append((time.monotonic(), digest))
        key = request.headers.get("x-goog-api-key", "")
        prompt_tokens = count_tokens(
            "".join(_texts(body.get("contents"))) + "".join(_texts(body.get("systemInstruction")))
        )
        now = time.monotonic()
        rpm_w, tpm_w = self._windows.setdefault(
            hashlib.sha256(key.encode()).hexdigest(),
            (
                _Window(cfg.rpm, cfg.window_s) if cfg.rpm else None,
                _Window(cfg.tpm, cfg.window_s) if cfg.tpm else None,
            ),
        )
        waits = [w.check(a, now) for w, a in ((rpm_w, 1), (tpm_w, prompt_tokens)) if w is not None]
        if any(waits):
            st.quota_429 += 1
            return self._quota_error(
                max(waits), "Quota exceeded for metric: generate_content_requests_per_minute"
            )
        for w, a in ((rpm_w, 1), (tpm_w, prompt_tokens)):
            if w is not None:
                w.add(a, now)

        rng = self._rng
        if rng.random() < cfg.p_capacity_429 or st.requests <= cfg.first_429s:
            st.capacity_429 += 1
            return self._quota_error(
                cfg.capacity_retry_delay_s, "The model is overloaded. Please try again later."
            )
        if cfg.latency_median_s > 0:  # 0: answer at once (throughput benchmarks)
            await asyncio.sleep(rng.lognormvariate(math.log(cfg.latency_median_s), cfg.latency_sigma))
        if rng.random() < cfg.p_hang:
            st.hangs += 1
            await asyncio.sleep(cfg.hang_s)
        roll = rng.random()
        if roll < cfg.p_500:
            st.server_errors += 1
            return self._error(500, "INTERNAL", "An internal error has occurred.")
        if roll < cfg.p_500 + cfg.p_503:
            st.server_errors += 1
            return self._error(503, "UNAVAILABLE", "The service is currently unavailable.")
        gone = request.transport is None or request.transport.is_closing()
        response = self._respond(model, body, digest, prompt_tokens, rng, delivered=not gone)
        return web.json_response(response)

    def _quota_error(self, delay: float, message: str) -> web.Response:
        if self.config.retry_hint == "header":  # whole seconds, as Retry-After allows
            response = self._error(429, "RESOURCE_EXHAUSTED", message)
            response.headers["Retry-After"] = str(math.ceil(delay))
            return response
        retry = {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{max(delay, 0.001):.3f}s",
        }
        return self._error(429, "RESOURCE_EXHAUSTED", message, [retry])

    def _respond(
        self,
        model: str,
        body: dict[str, Any],
        digest: str,
        prompt_tokens: int,
        rng: random.Random,
        delivered: bool = True,
    ) -> dict[str, Any]:
        """An answer to ``body`` (already in lowerCamel, ``digest`` its hash)."""
        cfg, st = self.config, self.stats
        gen = body.get("generationConfig") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        value = task_answer(
            schema,
            "\n".join(_texts(body.get("contents"))),
            random.Random(digest),
            p_copy=cfg.p_copy,
            p_false_pass=cfg.p_false_pass,
        )
        if value is None:
            value = answer_for_schema(schema, random.Random(digest))
        text = json.dumps(value) if schema is not None else str(value)
        finish = "STOP"
        roll = rng.random()
        if roll < cfg.p_malformed:
            st.malformed += 1
            text = "Sure! Here is the JSON you asked for: " + text.replace('"', "'")
        elif roll < cfg.p_malformed + cfg.p_truncated:
            st.truncated += 1
            text, finish = text[: max(1, len(text) // 2)], "MAX_TOKENS"
        max_out = int(gen.get("maxOutputTokens") or 8192)
        out_tokens = count_tokens(text)
        if out_tokens > max_out:
            text, finish, out_tokens = text[: max_out * 4], "MAX_TOKENS", max_out
        thinking = min(
            cfg.thinking_tokens,
            max(0, int((gen.get("thinkingConfig") or {}).get("thinkingBudget", cfg.thinking_tokens))),
        )
        if delivered:
            st.answered += 1
            st.answered_bodies[digest] += 1
            st.answer_times.append(time.monotonic() - self._started)
        else:
            st.abandoned += 1
        st.billed_bodies[digest] += 1
        st.input_tokens += prompt_tokens
        st.output_tokens += out_tokens + thinking
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt_tokens + out_tokens + thinking,
        }
        if thinking:
            usage["thoughtsTokenCount"] = thinking
        return {
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": digest[:20],
        }

    # --- Batch API ---------------------------------------------------------------------------
    def _create_batch(self, model: str, body: dict[str, Any]) -> web.Response:
        batch = body.get("batch") or {}
        items = (((batch.get("inputConfig") or {}).get("requests") or {}).get("requests")) or []
        if not items:
            return self._error(400, "INVALID_ARGUMENT", "batch.inputConfig.requests.requests is empty")
        self.stats.batch_jobs += 1
        self.stats.batch_requests += len(items)
        rng = random.Random(f"{self.config.seed}-{self.stats.batch_jobs}")
        responses = []
        for item in items:
            req = item.get("request") or {}
            prompt_tokens = count_tokens(
                "".join(_texts(req.get("contents"))) + "".join(_texts(req.get("systemInstruction")))
            )
            req = lower_camel(req)
            entry = {"response": self._respond(model, req, _digest(req), prompt_tokens, rng)}
            if "metadata" in item:
                entry["metadata"] = item["metadata"]
            responses.append(entry)
        name = f"batches/{uuid.uuid4().hex[:16]}"
        self._batches[name] = {
            "created": time.monotonic(),
            "model": model,
            "display": batch.get("displayName", ""),
            "responses": responses,
        }
        return web.json_response(self._batch_view(name))

    def _batch_view(self, name: str) -> dict[str, Any]:
        b = self._batches[name]
        done = time.monotonic() - b["created"] >= self.config.batch_delay_s
        meta = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{b['model']}",
            "displayName": b["display"],
            "state": "BATCH_STATE_SUCCEEDED" if done else "BATCH_STATE_RUNNING",
        }
        if done:
            meta["output"] = {"inlinedResponses": {"inlinedResponses": b["responses"]}}
        return {"name": name, "metadata": meta, "done": done}

    async def _list_batches(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return web.json_response({"operations": [self._batch_view(name) for name in self._batches]})

    async def _get_batch(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        name = f"batches/{request.match_info['batch']}"
        if name not in self._batches:
            return self._error(404, "NOT_FOUND", f"{name} not found")
        return web.json_response(self._batch_view(name))


def _digest(body: dict[str, Any]) -> str:
    """One request's identity: the same body asked twice is the same answer, billed twice."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def lower_camel(obj: Any, *, literal: bool = False) -> Any:
    """Field names in lowerCamel, as the REST API's JSON mapping reads snake_case ones too
    (a JSON schema inside ``responseJsonSchema``/``responseSchema`` is data, left as is)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            name = k if literal else re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k)
            out[name] = lower_camel(v, literal=literal or name in ("responseJsonSchema", "responseSchema"))
        return out
    if isinstance(obj, list):
        return [lower_camel(v, literal=literal) for v in obj]
    return obj


class RunningSimulator:
    """A simulator serving on 127.0.0.1 from a background thread (tests, benchmarks, demo)."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.sim = GeminiSimulator(config)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(host, port), daemon=True, name="gemini-sim")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Gemini simulator did not start")

    def _serve(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.sim.app(), access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, host, port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # the bound port when port=0
        self.url = f"http://{host}:{self.port}"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    @property
    def stats(self) -> SimStats:
        return self.sim.stats

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: SimConfig, host: str = "127.0.0.1", port: int = 8787) -> None:  # pragma: no cover
    """Foreground server for ``crome-ray oracle sim``."""
    web.run_app(GeminiSimulator(config).app(), host=host, port=port, access_log=None, print=None)
