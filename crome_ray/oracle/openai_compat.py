"""The ``openai`` oracle backend: any OpenAI-compatible chat-completions server (``vllm serve``,
a gateway, a hosted endpoint) through the official ``openai`` client.

Like every backend it makes one attempt per ``generate`` and sorts failures into the
``OracleError`` kinds; the governor, cap, cache and retries around it are the same as
for Gemini (``oracle.client``), so the client's own retries are off (``max_retries=0``).

- Structured output: ``response_format`` ``json_schema`` (strict), with the schema
  bounded like every local engine's (``oracle.schema_bounds``, bounds from
  ``oracle.engine``); the answer is checked against the schema as written.
- Failures: 429 is retryable and waits at least the server's ``Retry-After``; 5xx, 408,
  409, timeouts and connection errors are retryable; other 4xx (a bad key, an unknown
  model, a request the server refuses) are fatal.
- Usage: the server's ``usage``. A server that reports none is charged the call's worst
  case (every prompt byte a token, every allowed output token used), so a missing count
  can only overstate spend, never let the cap be crossed.
- Price: ``oracle.prices[model]`` when given (a paid endpoint must have one), else the
  GPU-hour price of ``oracle.engine`` (0 unless set): a ``vllm serve`` on the cluster.
- The key comes from ``oracle.api_key_env`` (default ``OPENAI_API_KEY``); a local server
  that checks none gets the placeholder ``EMPTY``. It goes only to the client.
"""

from __future__ import annotations

import time
from typing import Any

from crome_ray.oracle.backends import register_backend
from crome_ray.oracle.config import ModelPrice, OracleConfig
from crome_ray.oracle.protocol import Answer, ErrorKind, OracleError, OracleRequest, Usage
from crome_ray.oracle.schema_bounds import SchemaBoundError, bounded

RETRYABLE_STATUS = {408, 409, 429}


def classify(e: Exception) -> OracleError:
    """An ``openai`` client exception as an oracle error kind (never with the key in it)."""
    import openai

    if isinstance(e, OracleError):
        return e
    if isinstance(e, openai.APITimeoutError):
        return OracleError(ErrorKind.RETRYABLE, "the request timed out")
    if isinstance(e, openai.APIConnectionError):
        return OracleError(ErrorKind.RETRYABLE, f"cannot reach the server: {e.__cause__ or e}")
    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        retry_after = None
        raw = e.response.headers.get("retry-after") if e.response is not None else None
        if raw:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
        kind = ErrorKind.RETRYABLE if status in RETRYABLE_STATUS or status >= 500 else ErrorKind.FATAL
        return OracleError(kind, f"HTTP {status}: {_message(e)}", status=status, retry_after=retry_after)
    if isinstance(e, openai.APIResponseValidationError | openai.APIError):
        return OracleError(ErrorKind.RETRYABLE, f"malformed response: {e}")
    return OracleError(ErrorKind.RETRYABLE, f"{type(e).__name__}: {e}")


def _message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return str(getattr(e, "message", e))[:500]


@register_backend("openai")
class OpenAICompatBackend:
    name = "openai"

    def __init__(self, config: OracleConfig, api_key: str = ""):
        import openai

        if not config.base_url:
            raise OracleError(
                ErrorKind.FATAL, "oracle.backend openai needs oracle.base_url (e.g. http://host:8000/v1)"
            )
        self.config = config
        self._price = config.price()
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "EMPTY",
            timeout=config.retry.timeout_s,
            max_retries=0,  # retries are the oracle client's, through the governor
        )

    @property
    def price(self) -> ModelPrice:
        return self._price

    async def check_model(self) -> None:
        try:
            models = [m.id async for m in self.client.models.list()]
        except Exception as e:
            err = classify(e)
            raise OracleError(ErrorKind.FATAL, f"{self.config.base_url}: {err}", status=err.status) from None
        if self.config.model not in models:
            raise OracleError(
                ErrorKind.FATAL,
                f"{self.config.base_url} does not serve the model {self.config.model!r}; "
                f"it serves: {', '.join(models) or 'nothing'}",
            )

    def request_body(self, req: OracleRequest) -> dict[str, Any]:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        p = req.params
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": p.max_output_tokens,
            "temperature": p.temperature,
        }
        if p.top_p is not None:
            body["top_p"] = p.top_p
        if p.seed is not None:
            body["seed"] = p.seed
        if req.json_schema is not None:
            e = self.config.engine
            try:
                schema = bounded(req.json_schema, max_string=e.max_string_chars, max_items=e.max_items)
            except SchemaBoundError as err:
                raise OracleError(ErrorKind.FATAL, f"the schema cannot be bounded: {err}") from None
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        return body

    async def generate(self, req: OracleRequest) -> Answer:
        body = self.request_body(req)
        started = time.perf_counter()
        try:
            resp = await self.client.chat.completions.create(**body)
        except Exception as e:
            raise classify(e) from None
        latency = time.perf_counter() - started
        if not resp.choices:
            raise OracleError(ErrorKind.RETRYABLE, "the server returned no choices")
        choice = resp.choices[0]
        u = resp.usage
        if u is None:  # charged at the worst case: never less than the truth
            usage = Usage(input_tokens=req.worst_input_tokens(), output_tokens=req.params.max_output_tokens)
        else:
            details = getattr(u, "prompt_tokens_details", None)
            usage = Usage(
                input_tokens=u.prompt_tokens or 0,
                output_tokens=u.completion_tokens or 0,
                cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
            )
        return Answer(
            text=choice.message.content or "",
            usage=usage,
            finish_reason=choice.finish_reason,
            latency_s=latency,
        )

    async def aclose(self) -> None:
        await self.client.close()
