"""Gemini through the google-genai async client: one attempt per call, every failure sorted.

Retries are not the SDK's: its retry options ignore ``retryDelay`` and would hide
attempts from the governor, which must see each one (each can be billed). So the SDK
makes one attempt, failures become ``OracleError`` of a kind (``classify``), and
``oracle.client`` retries with tenacity, honouring ``retryDelay`` / ``Retry-After``.

Answers are checked by ``oracle.answers`` (JSON and schema), as every backend's are.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from crome_ray.oracle.backends import register_backend
from crome_ray.oracle.config import ModelPrice, OracleConfig
from crome_ray.oracle.protocol import Answer, ErrorKind, OracleError, OracleRequest, Usage

_DELAY = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")


def retry_delay(details: Any, headers: Any = None, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait before trying again, or None if it did not say.

    From a 429 body's ``RetryInfo.retryDelay`` (a protobuf Duration: "12s", "1.5s"), else
    from a ``Retry-After`` header, as seconds ("30") or an HTTP-date (waiting until then;
    ``now`` is for tests). Anything unreadable counts as not said."""
    try:
        for d in (details or {}).get("error", {}).get("details", []) or []:
            m = _DELAY.match(str(d.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    except AttributeError:
        pass
    value = headers.get("retry-after") if headers is not None and hasattr(headers, "get") else None
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def classify(exc: BaseException) -> OracleError:
    """Sort an exception from the SDK or its HTTP stack into an ``ErrorKind``. Never leaks the key:
    messages are built from status codes and the server's error text only."""
    from google.genai import errors

    if isinstance(exc, OracleError):
        return exc
    if isinstance(exc, errors.APIError):
        code = int(getattr(exc, "code", 0) or 0)
        text = f"Gemini answered {code} {exc.status or ''}: {exc.message or ''}".strip()
        if code == 429:
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return OracleError(
                ErrorKind.RETRYABLE, text, retry_after=retry_delay(exc.details, headers), status=429
            )
        if code in (408, 409) or code >= 500:
            return OracleError(ErrorKind.RETRYABLE, text, status=code)
        return OracleError(ErrorKind.FATAL, text, status=code)
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or "Timeout" in name:
        return OracleError(ErrorKind.RETRYABLE, f"timed out ({name})")
    if isinstance(exc, (ConnectionError, OSError)) or module.split(".")[0] in (
        "httpx",
        "httpx2",
        "aiohttp",
        "httpcore",
    ):
        return OracleError(ErrorKind.RETRYABLE, f"connection failed ({name}: {exc})")
    return OracleError(ErrorKind.FATAL, f"unexpected {name}: {exc}")


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _direct_session():
    """An aiohttp session that skips proxy discovery, when no proxy is configured.

    google-genai's own session has ``trust_env=True``, so aiohttp looks up proxy
    variables and ~/.netrc in a thread for every request: about a third of an oracle
    worker's Python time in the benchmark. With a proxy variable set, the SDK's session
    is kept (proxies keep working). A session must be made inside the event loop that
    uses it, so outside a running loop this returns None and the SDK's default stays.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)


@register_backend("gemini")
class GeminiBackend:
    name = "gemini"

    def __init__(self, config: OracleConfig, api_key: str):
        from google import genai
        from google.genai import types

        self.config, self.model = config, config.model
        self._types = types
        options: dict[str, Any] = {"timeout": int(config.retry.timeout_s * 1000)}
        if config.base_url:
            options["base_url"] = config.base_url
        self._session = _direct_session()
        if self._session is not None:
            options["aiohttp_client"] = self._session
        self._client = genai.Client(api_key=api_key, http_options=types.HttpOptions(**options))

    @property
    def client(self):
        return self._client

    @property
    def price(self) -> ModelPrice:
        return self.config.price()

    async def aclose(self) -> None:
        """Close the HTTP session this backend made (the SDK's own is closed by the SDK)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def check_model(self) -> None:
        """Fail before any paid call if the model id is unknown or retired."""
        try:
            await self._client.aio.models.get(model=self.model)
        except Exception as e:
            err = classify(e)
            if err.status == 404:
                raise OracleError(
                    ErrorKind.FATAL,
                    f"Gemini model {self.model!r} is not available (retired or "
                    "misspelled): set oracle.model to a current model id",
                    status=404,
                ) from None
            raise err from None

    def generation(self, req: OracleRequest) -> dict[str, Any]:
        """``req``'s generation settings by the REST API's names (camelCase): the one list both
        ``wire_request`` and ``generation_config`` are made from."""
        generation: dict[str, Any] = {
            "temperature": req.params.temperature,
            "maxOutputTokens": req.params.max_output_tokens,
        }
        if req.params.top_p is not None:
            generation["topP"] = req.params.top_p
        if req.params.seed is not None:
            generation["seed"] = req.params.seed
        if req.json_schema is not None:
            generation["responseMimeType"] = "application/json"
            generation["responseJsonSchema"] = req.json_schema
        if self.config.thinking_budget is not None and self.model.startswith("gemini-2.5"):
            generation["thinkingConfig"] = {"thinkingBudget": self.config.thinking_budget}
        return generation

    def generation_config(self, req: OracleRequest):
        """The SDK's ``GenerateContentConfig`` for ``req`` (its pydantic models take the REST
        names as aliases; a nested config is a dict, validated like the SDK validates one)."""
        kwargs = self.generation(req)
        if req.system:
            kwargs["systemInstruction"] = req.system
        return self._types.GenerateContentConfig.model_validate(kwargs)

    def wire_request(self, req: OracleRequest) -> dict[str, Any]:
        """The ``generateContent`` REST body for ``req``, as the SDK would send it.

        Equal to what google-genai's own converter makes from ``generation_config(req)``
        (tests/test_oracle_client.py holds the two side by side), built directly because the
        SDK's pydantic round trip costs about 0.7 ms of CPU per call, most of an oracle
        worker's client time.
        """
        body: dict[str, Any] = {"contents": [{"parts": [{"text": req.prompt}], "role": "user"}]}
        if req.system:
            body["systemInstruction"] = {"parts": [{"text": req.system}], "role": "user"}
        body["generationConfig"] = self.generation(req)
        return body

    async def generate(self, req: OracleRequest) -> Answer:
        """One attempt. Raises OracleError (classified) on any failure.

        The call goes through the SDK's API client (its auth, base URL, API version,
        timeout and error types) with the REST body from ``wire_request``; if this SDK
        version lacks that client, through the public ``generate_content``.
        """
        api = getattr(self._client.aio, "_api_client", None)
        start = time.perf_counter()
        try:
            if api is None or getattr(api, "vertexai", False):
                response = await self._client.aio.models.generate_content(
                    model=self.model, contents=req.prompt, config=self.generation_config(req)
                )
                return answer_from_response(response, time.perf_counter() - start)
            raw = await api.async_request(
                "post", f"models/{self.model}:generateContent", self.wire_request(req)
            )
            data = json.loads(raw.body) if raw.body else {}
        except Exception as e:
            raise classify(e) from None
        return answer_from_wire(data, time.perf_counter() - start)


def answer_from_wire(data: dict[str, Any], latency_s: float) -> Answer:
    """An ``Answer`` from a ``generateContent`` response body (the REST JSON, camelCase)."""
    meta = data.get("usageMetadata") or {}
    usage = Usage(
        input_tokens=int(meta.get("promptTokenCount") or 0),
        output_tokens=int(meta.get("candidatesTokenCount") or 0),
        thinking_tokens=int(meta.get("thoughtsTokenCount") or 0),
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
    )
    candidates = data.get("candidates") or []
    finish, text = None, ""
    if candidates:
        finish = candidates[0].get("finishReason")
        parts = (candidates[0].get("content") or {}).get("parts") or []
        text = "".join(p["text"] for p in parts if p.get("text") and not p.get("thought"))
    return Answer(text=text, usage=usage, finish_reason=finish, latency_s=latency_s)


def answer_from_response(response: Any, latency_s: float) -> Answer:
    meta = getattr(response, "usage_metadata", None)
    usage = Usage(
        input_tokens=int(getattr(meta, "prompt_token_count", 0) or 0),
        output_tokens=int(getattr(meta, "candidates_token_count", 0) or 0),
        thinking_tokens=int(getattr(meta, "thoughts_token_count", 0) or 0),
        cached_tokens=int(getattr(meta, "cached_content_token_count", 0) or 0),
    )
    candidates = getattr(response, "candidates", None) or []
    finish = None
    text = ""
    if candidates:
        reason = getattr(candidates[0], "finish_reason", None)
        finish = getattr(reason, "name", None) or (str(reason) if reason else None)
        parts = getattr(getattr(candidates[0], "content", None), "parts", None) or []
        text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", None))
    return Answer(text=text, usage=usage, finish_reason=finish, latency_s=latency_s)
