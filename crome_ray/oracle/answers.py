"""Checking an oracle's answer: JSON parsing, schema validation, and the rule for a bad answer. Pure.

Every path that receives answers (online calls in ``oracle.client``, Batch API results in
``oracle.batch``) goes through ``judge_answer``, so they agree on one rule: an answer
that is not the asked-for JSON is an ``INVALID_OUTPUT`` error carrying an excerpt of the
raw text; it was billed (its cost is counted by the caller) but it is never cached,
so the question can be asked again. A good answer becomes an ``OracleResult`` with the
parsed value, ready to be cached.

Validation uses ``jsonschema`` rather than the SDK's ``response.parsed``, which is
silently ``None`` for a bad answer.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from crome_ray.oracle.protocol import Answer, ErrorKind, OracleError, OracleResult

RAW_EXCERPT_CHARS = 300


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    """One checked, compiled validator per schema (``jsonschema.validate`` re-checks the schema
    on every call, which costs more than the rest of a call's client work)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def parse_json_answer(text: str, schema: dict[str, Any] | None) -> Any:
    """The answer as JSON that satisfies ``schema``, or an INVALID_OUTPUT error with an excerpt.
    Without a schema nothing is parsed (None): the answer is free text."""
    if schema is None:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise OracleError(
            ErrorKind.INVALID_OUTPUT,
            f"the answer is not JSON ({e.msg if hasattr(e, 'msg') else e})",
            raw=(text or "")[:RAW_EXCERPT_CHARS],
        ) from None
    try:
        _validator(json.dumps(schema, sort_keys=True)).validate(value)
    except jsonschema.ValidationError as e:
        raise OracleError(
            ErrorKind.INVALID_OUTPUT,
            f"the answer does not match the schema: {e.message}",
            raw=text[:RAW_EXCERPT_CHARS],
        ) from None
    return value


def judge_answer(
    answer: Answer,
    schema: dict[str, Any] | None,
    *,
    key: str,
    cost_usd: float,
    backend: str,
    model: str,
    attempts: int = 1,
) -> OracleResult | OracleError:
    """A billed answer as a result to cache, or the INVALID_OUTPUT error to record instead."""
    try:
        parsed = parse_json_answer(answer.text, schema)
    except OracleError as e:
        return e
    return OracleResult(
        key=key,
        text=answer.text,
        parsed=parsed,
        usage=answer.usage,
        cost_usd=cost_usd,
        latency_s=answer.latency_s,
        backend=backend,
        model=model,
        attempts=attempts,
    )
