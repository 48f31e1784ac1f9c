"""The Gemini simulator answers the augmentation's tasks from the prompt's own texts: rubrics name
words of the request, rewrites change the answer they were given (and pass the code-level checks),
verifications fail an unchanged control; p_copy and p_false_pass make it the lazy oracle that the
checks and the verifier calibration exist for."""

import json
import random

import jsonschema
import pytest
from google import genai
from google.genai import types

from crome_ray.augment import prompts as P
from crome_ray.augment.checks import rewrite_problem
from crome_ray.augment.config import RewriteChecks
from crome_ray.augment.parse import parse_elements, parse_rewrite, parse_rubric, parse_verdict
from crome_ray.oracle.simulated_tasks import task_answer
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from tests.augment_examples import mid_sized_example


@pytest.fixture(scope="module")
def example(samples):
    return mid_sized_example(samples, "x")


def answer(task: P.OracleTask, seed: int = 0, **kw):
    value = task_answer(task.schema, task.prompt, random.Random(seed), **kw)
    jsonschema.validate(value, task.schema)  # whatever it says, it keeps the contract
    return value


def test_a_rubric_names_words_of_the_request_with_weights_that_sum_to_1(example):
    rubric = parse_rubric(answer(P.rubric(example)), 5)
    assert len(rubric.attributes) == 5 and rubric.note is None
    from_request = [a.name for a in rubric.attributes if a.name in example.question]
    assert len(from_request) >= 3, [a.name for a in rubric.attributes]


def test_elements_quote_the_answers_under_the_rubrics_names(example):
    rubric = parse_rubric(answer(P.rubric(example)), 5)
    kept, unknown = parse_elements(answer(P.elements(example, list(rubric.attributes))), rubric)
    assert unknown == 0 and {e.attribute for e in kept} == {a.name for a in rubric.attributes}
    for e in kept:
        assert e.element in (example.chosen if e.answer == "A" else example.rejected)


@pytest.mark.parametrize("kind", ["degrade", "upgrade", "can", "para_a", "para_b"])
def test_every_rewrite_changes_its_source_and_passes_the_code_level_checks(example, kind):
    attr = P.Attribute("accuracy", "Correct.", 1.0)
    task, source = {
        "degrade": (P.degrade(example, attr), example.chosen),
        "upgrade": (P.upgrade(example, attr), example.rejected),
        "can": (P.can(example), example.rejected),
        "para_a": (P.para(example, "A"), example.chosen),
        "para_b": (P.para(example, "B"), example.rejected),
    }[kind]
    rewrite = parse_rewrite(answer(task))
    assert rewrite != source.strip()
    neutral = kind in ("can", "para_a", "para_b")
    assert rewrite_problem(source, rewrite, RewriteChecks(), P.fences(example), neutral=neutral) is None


def test_a_lazy_simulator_hands_the_source_back_and_the_checks_catch_it(example):
    task = P.degrade(example, P.Attribute("accuracy", "Correct.", 1.0))
    rewrite = parse_rewrite(answer(task, p_copy=1.0))
    assert rewrite == example.chosen.strip()
    assert rewrite_problem(example.chosen, rewrite, RewriteChecks())[0] == "near_copy"


def test_the_verifier_fails_an_unchanged_control_unless_told_to_pass_it(example):
    attr = P.Attribute("accuracy", "Correct.", 1.0)
    control = P.verify(example, "A", example.chosen, attr, "worse")
    assert not parse_verdict(answer(control)).passed
    assert parse_verdict(answer(control, p_false_pass=1.0)).passed
    real = P.verify(example, "A", example.chosen + " But this is wrong.", attr, "worse")
    assert parse_verdict(answer(real)).passed


def test_a_schema_that_is_no_augmentation_task_gets_the_generic_answer():
    assert (
        task_answer({"type": "object", "properties": {"x": {"type": "string"}}}, "p", random.Random()) is None
    )
    assert task_answer(P.rubric(P.Example("x", "q", "a", "b")).schema, "no fences", random.Random()) is None


def test_over_the_wire_the_real_client_gets_the_task_answer(example):
    task = P.degrade(example, P.Attribute("accuracy", "Correct.", 1.0))
    with RunningSimulator(SimConfig(latency_median_s=0.001)) as sim:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url))
        r = client.models.generate_content(
            model="gemini-2.5-flash",
            contents=task.prompt,
            config=types.GenerateContentConfig(
                system_instruction=task.system,
                response_mime_type="application/json",
                response_json_schema=task.schema,
            ),
        )
    rewrite = parse_rewrite(json.loads(r.text))
    assert (
        rewrite != example.chosen.strip()
        and rewrite_problem(example.chosen, rewrite, RewriteChecks()) is None
    )
