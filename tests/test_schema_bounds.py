"""Schemas for local engines: every string, list and object bounded, and never wider than asked."""

import copy

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crome_ray.oracle.schema_bounds import SchemaBoundError, bounded

RUBRIC = {
    "type": "object",
    "properties": {
        "criteria": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "weight": {"type": "number"},
                    "note": {"type": ["string", "null"], "maxLength": 50},
                },
                "required": ["name", "weight"],
            },
        },
        "summary": {"$ref": "#/$defs/text"},
    },
    "required": ["criteria"],
    "$defs": {"text": {"type": "string"}},
}


def test_every_string_and_list_gets_a_bound_and_tighter_bounds_stay():
    original = copy.deepcopy(RUBRIC)
    out = bounded(RUBRIC, max_string=200, max_items=8)
    assert original == RUBRIC  # a copy; the caller's schema is untouched
    criteria = out["properties"]["criteria"]
    assert criteria["maxItems"] == 8
    item = criteria["items"]
    assert item["properties"]["name"]["maxLength"] == 200
    assert item["properties"]["note"]["maxLength"] == 50  # already tighter: kept
    assert out["$defs"]["text"]["maxLength"] == 200  # reached through $defs, as $ref uses it
    assert out["additionalProperties"] is False and item["additionalProperties"] is False
    assert "maxLength" not in item["properties"]["weight"]  # numbers are not strings
    jsonschema.Draft202012Validator.check_schema(out)


def test_the_bounded_schema_refuses_the_runaway_answer_the_original_accepts():
    long_name = {"criteria": [{"name": "x" * 201, "weight": 1}]}
    many = {"criteria": [{"name": "a", "weight": 0.1}] * 9}
    extra = {"criteria": [], "rambling": "..."}
    fine = {"criteria": [{"name": "helpfulness", "weight": 1.0, "note": None}], "summary": "ok"}
    out = bounded(RUBRIC, max_string=200, max_items=8)
    for answer in (long_name, many, extra):
        assert jsonschema.Draft202012Validator(RUBRIC).is_valid(answer)
        assert not jsonschema.Draft202012Validator(out).is_valid(answer)
    assert jsonschema.Draft202012Validator(out).is_valid(fine)


def test_a_schema_that_asks_for_more_than_the_bound_is_an_error_naming_where():
    schema = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 500}}}
    with pytest.raises(SchemaBoundError, match=r"#/properties/essay: minLength 500 is above the bound 100"):
        bounded(schema, max_string=100, max_items=4)
    lists = {"type": "array", "items": {"type": "string"}, "minItems": 10}
    with pytest.raises(SchemaBoundError, match=r"#: minItems 10 is above the bound 4"):
        bounded(lists, max_string=100, max_items=4)


leaves = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "maxLength": 5},
        {"type": "string", "maxLength": 10_000},
        {"type": ["string", "null"]},
        {"type": "number"},
        {"type": "boolean"},
        {"enum": ["Pass", "Fail"]},
    ]
)
schemas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda s: {"type": "array", "items": s}, inner),
        st.builds(lambda s, n: {"type": "array", "items": s, "maxItems": n}, inner, st.integers(1, 100)),
        st.builds(
            lambda props: {"type": "object", "properties": props},
            st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3),
        ),
        st.builds(lambda xs: {"anyOf": xs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=12,
)


def nodes(schema):
    yield schema
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from nodes(schema[key])
    for sub in schema.get("anyOf", []):
        yield from nodes(sub)
    for sub in schema.get("properties", {}).values():
        yield from nodes(sub)


@given(schemas, st.integers(1, 300), st.integers(1, 20))
def test_no_string_or_list_is_left_unbounded_or_wider_than_it_was(schema, max_string, max_items):
    out = bounded(schema, max_string=max_string, max_items=max_items)
    jsonschema.Draft202012Validator.check_schema(out)
    for before, after in zip(nodes(schema), nodes(out), strict=True):
        types = before.get("type") if isinstance(before.get("type"), list) else [before.get("type")]
        if "string" in types:
            assert after["maxLength"] == min(before.get("maxLength", max_string), max_string)
        if "array" in types:
            assert after["maxItems"] == min(before.get("maxItems", max_items), max_items)
        if "object" in types:
            assert after["additionalProperties"] is False
