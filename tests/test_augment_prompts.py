"""The augmentation's oracle tasks as requests: valid schemas with the task's own bounds, and rows the
oracle job reads as they are."""

import json

import jsonschema
import pytest

from crome_ray.augment.prompts import RUBRIC_SCHEMA, VERIFY_SCHEMA, counterfactual, rubric, verification
from crome_ray.config import OracleJobConfig, load_config
from crome_ray.oracle.job import read_prompts
from crome_ray.oracle.schema_bounds import bounded

Q = "Explain why the sky is blue."
A = "Rayleigh scattering: shorter wavelengths scatter more, so blue light reaches us from every direction."


@pytest.mark.parametrize("schema", [RUBRIC_SCHEMA, VERIFY_SCHEMA])
def test_the_schemas_are_valid_and_survive_a_local_engines_bounds(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    tight = bounded(schema, max_string=1200, max_items=16)
    assert tight["additionalProperties"] is False  # objects closed for the engine


def test_a_rubric_asks_for_3_to_5_weighted_attributes():
    t = rubric(Q)
    good = {"attributes": [{"name": n, "description": "d", "weight": 1 / 3} for n in "abc"]}
    jsonschema.validate(good, t.schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"attributes": good["attributes"][:2]}, t.schema)  # too few
    assert Q in t.prompt and "weights sum to 1" in t.prompt


def test_a_rewrite_may_be_at_most_about_twice_its_source():
    t = counterfactual(Q, A, "accuracy")
    assert t.schema["properties"]["rewrite"]["maxLength"] == max(2 * len(A), 200)
    assert "accuracy" in t.prompt and A in t.prompt
    long = counterfactual(Q, "x" * 5000, "accuracy", chars=800)
    assert long.schema["properties"]["rewrite"]["maxLength"] == 2 * len("x" * 800 + " [...]")


def test_a_verification_names_the_attribute_and_shows_both_texts():
    t = verification(Q, A, A + " Also, the sky is green.", "accuracy")
    assert "accuracy" in t.prompt and A in t.prompt and "sky is green" in t.prompt
    jsonschema.validate(
        {"target_changed": True, "others_preserved": True, "verdict": "Pass", "reason": "r"}, t.schema
    )


def test_task_rows_are_read_by_the_oracle_job_as_written(tmp_path):
    tasks = [rubric(Q), counterfactual(Q, A, "clarity"), verification(Q, A, A, "clarity")]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(t.row(f"t{i}")) + "\n" for i, t in enumerate(tasks)))
    rows, bad = read_prompts(load_config(OracleJobConfig, None, [f"input={path}"]))
    assert not bad
    for row, t in zip(rows, tasks, strict=True):
        assert (row["system"], row["prompt"], json.loads(row["schema"])) == (t.system, t.prompt, t.schema)
        assert row["max_output_tokens"] == t.max_output_tokens


def test_a_bad_per_row_output_budget_is_quarantined_by_name(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "max_output_tokens": "lots"}) + "\n")
    rows, bad = read_prompts(load_config(OracleJobConfig, None, [f"input={path}"]))
    assert not rows and len(bad) == 1 and "max_output_tokens must be a positive integer" in str(bad[0].error)
