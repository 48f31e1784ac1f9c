"""What every oracle backend speaks: requests, answers, results, usage and the kinds of failure.

Pure types. A request's ``key`` is a hash of everything that determines the answer
(backend, model, system text, prompt, schema, generation parameters), so the same
question asked twice, in one run or the next, is the same cache entry.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from crome_ray.errors import CromeError


class ErrorKind(enum.StrEnum):
    RETRYABLE = "retryable"  # 429 / 5xx / timeouts / connection errors: try again later
    FATAL = "fatal"  # bad key, unknown model, bad request: trying again cannot help
    INVALID_OUTPUT = "invalid_output"  # answered, but not the JSON the schema asks for
    QUOTA_EXHAUSTED = "quota_exhausted"  # still throttled after every retry
    BUDGET_EXHAUSTED = "budget_exhausted"  # the next call could cross the dollar cap


class OracleError(CromeError):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        raw: str | None = None,
    ):
        super().__init__(message)
        self.kind, self.retry_after, self.status, self.raw = kind, retry_after, status, raw

    def __reduce__(self):
        """Pickled whole: it travels between actors as a value (a local engine's answer)."""
        kw = {"retry_after": self.retry_after, "status": self.status, "raw": self.raw}
        return _rebuild_error, (self.kind, str(self), kw)


def _rebuild_error(kind: ErrorKind, message: str, kw: dict) -> OracleError:
    return OracleError(kind, message, **kw)


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.0
    top_p: float | None = None
    max_output_tokens: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class OracleRequest:
    prompt: str
    system: str | None = None
    json_schema: dict[str, Any] | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    tag: str = ""  # what the caller is doing (rubric, rewrite...): metrics only, not in the key

    def key(self, backend: str, model: str) -> str:
        body = json.dumps(
            [
                backend,
                model,
                self.system,
                self.prompt,
                self.json_schema,
                [self.params.temperature, self.params.top_p, self.params.max_output_tokens, self.params.seed],
            ],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]

    def worst_input_tokens(self) -> int:
        """An upper bound for the dollar cap: a token is at least one byte of UTF-8, plus framing."""
        schema = json.dumps(self.json_schema) if self.json_schema else ""
        return len((self.prompt + (self.system or "") + schema).encode("utf-8")) + 64

    def estimated_input_tokens(self) -> int:
        """A cheap upper-leaning estimate (~3.5 characters per token) for reservations."""
        chars = len(self.prompt) + len(self.system or "") + len(json.dumps(self.json_schema or {}))
        return chars * 2 // 7 + 16


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0

    @property
    def billed_output_tokens(self) -> int:
        return self.output_tokens + self.thinking_tokens  # thinking is billed as output


@dataclass(frozen=True)
class Answer:
    """What a backend's one attempt returned, before it is checked (``oracle.answers``)."""

    text: str
    usage: Usage
    finish_reason: str | None
    latency_s: float


@dataclass(frozen=True)
class OracleResult:
    key: str
    text: str
    parsed: Any
    usage: Usage
    cost_usd: float
    latency_s: float
    backend: str
    model: str
    attempts: int = 1
    cached: bool = False

    def to_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "text": self.text,
            "parsed": self.parsed,
            "usage": [
                self.usage.input_tokens,
                self.usage.output_tokens,
                self.usage.thinking_tokens,
                self.usage.cached_tokens,
            ],
            "cost_usd": self.cost_usd,
            "latency_s": round(self.latency_s, 4),
            "backend": self.backend,
            "model": self.model,
            "attempts": self.attempts,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any], *, cached: bool = True) -> OracleResult:
        return cls(
            key=rec["key"],
            text=rec["text"],
            parsed=rec["parsed"],
            usage=Usage(*rec["usage"]),
            cost_usd=rec["cost_usd"],
            latency_s=rec["latency_s"],
            backend=rec["backend"],
            model=rec["model"],
            attempts=rec["attempts"],
            cached=cached,
        )
