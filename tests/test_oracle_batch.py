"""Gemini Batch API mode against the simulator: half price, resumable, never submitted twice."""

import asyncio

import pytest

from crome_ray.config import load_config
from crome_ray.oracle.batch import BatchRunner, BatchState
from crome_ray.oracle.cache import LedgerStore, ResponseCache
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.gemini import GeminiBackend
from crome_ray.oracle.governor_core import GovernorCore
from crome_ray.oracle.pricing import call_cost_micros
from crome_ray.oracle.protocol import ErrorKind, GenerationParams, OracleError, OracleRequest, OracleResult
from crome_ray.oracle.simulator import RunningSimulator, SimConfig

SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["score"],
}


def reqs(n):
    return [
        OracleRequest(f"Score answer {i}.", json_schema=SCHEMA, params=GenerationParams(max_output_tokens=64))
        for i in range(n)
    ]


def runner(sim, tmp_path, chunk=10, cap=1.0):
    cfg = load_config(
        OracleConfig, None, [f"base_url={sim.url}", "batch_poll_s=0.1", f"budget.cap_usd={cap}"]
    )
    cache = ResponseCache(str(tmp_path / "cache"), "gemini", cfg.model)
    core = GovernorCore(cfg, LedgerStore(str(tmp_path / "ledger.json")), cache.scan())
    state = BatchState.load(LedgerStore(str(tmp_path / "batches.json")))
    return BatchRunner(cfg, GeminiBackend(cfg, "k"), core, cache, state, chunk=chunk), cfg, core


@pytest.fixture()
def sim():
    with RunningSimulator(SimConfig(batch_delay_s=0.3)) as s:
        yield s


def test_batch_mode_answers_everything_at_the_batch_price(sim, tmp_path):
    r, cfg, core = runner(sim, tmp_path)
    results = asyncio.run(r.run(reqs(25)))
    assert all(isinstance(x, OracleResult) and 1 <= x.parsed["score"] <= 10 for x in results)
    assert sim.stats.batch_jobs == 3 and sim.stats.requests == 0  # 10 + 10 + 5, no online calls
    x = results[0]
    online = call_cost_micros(x.usage, cfg.price())
    assert (
        round(x.cost_usd * 1e6)
        == call_cost_micros(x.usage, cfg.price(), batch=True)
        == pytest.approx(online * 0.5, abs=1)
    )
    assert core.budget.spent == sum(round(x.cost_usd * 1e6) for x in results)  # exact micro-dollars


def test_a_restart_after_submitting_polls_the_same_jobs_instead_of_resubmitting(sim, tmp_path):
    first, _, _ = runner(sim, tmp_path)
    asyncio.run(first.submit(reqs(25)))  # then the process dies before collecting
    assert sim.stats.batch_jobs == 3
    second, _, _core = runner(sim, tmp_path)
    results = asyncio.run(second.run(reqs(25)))
    assert sim.stats.batch_jobs == 3 and second.submitted == 0
    assert all(isinstance(x, OracleResult) for x in results)
    third, _, _core3 = runner(sim, tmp_path)
    again = asyncio.run(third.run(reqs(25)))
    assert all(x.cached and x.cost_usd == 0 for x in again) and sim.stats.batch_jobs == 3


def test_a_job_created_just_before_a_crash_is_adopted_by_its_display_name(sim, tmp_path):
    first, _, _ = runner(sim, tmp_path, chunk=100)
    asyncio.run(first.submit(reqs(5)))
    # simulate the crash inside create(): the job exists at the provider, but its name was never recorded
    state = LedgerStore(str(tmp_path / "batches.json"))
    doc = state.load()
    doc["jobs"][0]["name"] = None
    state.save(doc)
    second, _, _ = runner(sim, tmp_path, chunk=100)
    results = asyncio.run(second.run(reqs(5)))
    assert sim.stats.batch_jobs == 1 and all(isinstance(x, OracleResult) for x in results)


def test_batch_requests_beyond_the_cap_are_marked_budget_exhausted(sim, tmp_path):
    r, _cfg, core = runner(sim, tmp_path, cap=0.0006)
    results = asyncio.run(r.run(reqs(20)))
    exhausted = [x for x in results if isinstance(x, OracleError) and x.kind == ErrorKind.BUDGET_EXHAUSTED]
    assert 0 < len(exhausted) < 20 and core.budget.spent <= 600  # micro-dollars


def test_the_oracle_job_in_batch_mode_needs_no_ray_and_commits_its_run(sim, tmp_path, monkeypatch):
    import json

    import ray
    from pydantic import SecretStr

    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import run_oracle_job

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": i, "prompt": f"Score {i}", "schema": json.dumps(SCHEMA)}) + "\n"
            for i in range(12)
        )
        + '{"id": 99}\n'
    )
    cfg = load_config(
        OracleJobConfig,
        None,
        [
            f"input={prompts}",
            f"storage.root={tmp_path / 'runs'}",
            f"oracle.base_url={sim.url}",
            "oracle.mode=batch",
            "oracle.batch_poll_s=0.1",
        ],
    )
    ray_before = ray.is_initialized()
    result = run_oracle_job(cfg, SecretStr("k"))
    assert ray.is_initialized() == ray_before  # batch mode starts no Ray
    assert result.manifest["counts"] == {"prompts": 13, "bad_input": 1, "answered": 12}
    assert result.details["oracle"]["spent_micros"] > 0 and sim.stats.batch_jobs == 1
