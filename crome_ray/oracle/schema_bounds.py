"""Bounding a JSON schema before it goes to a local engine's grammar. Pure.

Small local models, held to a JSON schema by vLLM's structured output (xgrammar),
still run away: the grammar lets a string or a list go on until ``max_tokens``, and the
answer then ends as truncated, invalid JSON (``docs/local_models.md``: 3 of
16 SmolLM2 answers at batch 16). A grammar can only stop what the schema bounds, so
``bounded`` returns a copy in which every string has a ``maxLength``, every array a
``maxItems`` and every object closes (``additionalProperties: false`` where the schema
leaves it open). Bounds already in the schema are kept where they are tighter.

Every bound only narrows the schema, so an answer valid under the bounded copy is
valid under the original, which is what the answer is checked against afterwards
(``oracle.answers``). A bound that contradicts the schema (a ``minLength`` above the
limit) is an error that names where, never a silent schema no answer can meet.

Nothing in ``jsonschema`` or ``pydantic`` rewrites a schema this way, hence this module.
"""

from __future__ import annotations

import copy
from typing import Any

# keywords whose value is one schema, a list of schemas, or a name -> schema mapping
_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class SchemaBoundError(ValueError):
    """The schema asks for more than the bound allows: no answer could satisfy both."""


def bounded(
    schema: dict[str, Any], *, max_string: int, max_items: int, close_objects: bool = True
) -> dict[str, Any]:
    """A copy of ``schema`` with every string, array and (optionally) object bounded."""
    if max_string < 1 or max_items < 1:
        raise ValueError("max_string and max_items must be at least 1")
    out = copy.deepcopy(schema)
    _bound(out, "#", max_string, max_items, close_objects)
    return out


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return set()


def _tighten(node: dict[str, Any], at: str, upper: str, lower: str, limit: int) -> None:
    low = node.get(lower)
    if isinstance(low, int) and low > limit:
        raise SchemaBoundError(
            f"{at}: {lower} {low} is above the bound {limit}; raise the bound or the schema's"
        )
    current = node.get(upper)
    node[upper] = min(current, limit) if isinstance(current, int) else limit


def _bound(node: Any, at: str, max_string: int, max_items: int, close: bool) -> None:
    if not isinstance(node, dict):
        return  # true / false schemas, or a malformed part jsonschema will name later
    kinds = _types(node)
    if "string" in kinds:
        _tighten(node, at, "maxLength", "minLength", max_string)
    if "array" in kinds:
        _tighten(node, at, "maxItems", "minItems", max_items)
    if "object" in kinds and close and "additionalProperties" not in node and "patternProperties" not in node:
        node["additionalProperties"] = False
    for key in _ONE:
        sub = node.get(key)
        for i, one in enumerate(sub) if isinstance(sub, list) else [(None, sub)]:  # draft-4 tuple items
            _bound(one, f"{at}/{key}" + (f"/{i}" if i is not None else ""), max_string, max_items, close)
    for key in _MANY:
        for i, sub in enumerate(node.get(key) or []):
            _bound(sub, f"{at}/{key}/{i}", max_string, max_items, close)
    for key in _NAMED:
        for name, sub in (node.get(key) or {}).items():
            _bound(sub, f"{at}/{key}/{name}", max_string, max_items, close)
