"""The augmentation job on the local Ray cluster, against the Gemini simulator, into moto S3:
every source row accounted for, every kind of pair, counts that match the files, spend under
the cap and close to the dry run's projection, a re-run that does nothing, a cap below the
projection, and a driver killed part-way that pays only for what it lacks when resumed."""

import math
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.errors import AugmentError
from crome_ray.augment.job import dry_run, run_augment_job
from crome_ray.augment.kinds import KIND_NAMES
from crome_ray.config import StorageConfig, load_config
from crome_ray.oracle.pricing import call_cost_micros, micros_to_usd
from crome_ray.oracle.protocol import Usage
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.records import AUGMENTED_PAIR_SCHEMA
from crome_ray.storage import RunFolder
from tests.driver_kill import kill_then_resume

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-SECRET-augment-0123456789abcdef"
SAMPLE = REPO / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
MODEL = "gemini-2.5-flash-lite"
ROWS = 500  # of the sample's pairs, augmented by the module's run


def config(sim, root, *over, storage=()):
    return load_config(
        AugmentConfig,
        None,
        [
            f"input={SAMPLE}",
            f"storage.root={root}",
            *storage,
            f"oracle.base_url={sim.url}",
            f"oracle.model={MODEL}",
            "oracle.retry.timeout_s=5",
            "oracle.retry.initial_backoff_s=0.05",
            "leakage_embeddings=false",
            # the simulator has no quota; Gemini Tier 1's (1,000 RPM) would make this a 24-minute test
            "oracle.quota.rpm=600000",
            "oracle.quota.input_tpm=1000000000",
            "oracle.quota.max_in_flight=256",
            *over,
        ],
    )


def billed_usd(stats: dict, model: str = MODEL) -> float:
    price = load_config(AugmentConfig, None, [f"oracle.model={model}"]).oracle.price()
    return micros_to_usd(call_cost_micros(Usage(stats["input_tokens"], stats["output_tokens"]), price))


@pytest.fixture(scope="module")
def sample_run(ray_cluster, s3_server, tiny_bert):
    """Half the 1,000-row sample (all of it is ingested) through the simulator into S3, once for
    the module (~3,500 calls)."""
    bucket = s3_server.new_bucket()
    with RunningSimulator(SimConfig(latency_median_s=0.0, seed=7)) as sim:
        cfg = config(
            sim,
            f"s3://{bucket}/crome",
            "oracle.budget.cap_usd=10",
            f"limit={ROWS}",
            # one attribute and no elements call: 7 calls an example, not 24, so the run
            # fits CI's time; every stage and every kind of pair still runs
            "tasks.attributes=1",
            "tasks.elements=false",
            # IQN's embeddings are the costliest CPU work here with MiniLM (~0.1 s a request at 64
            # tokens on one thread): this run embeds with a 2-layer random BERT (any HF encoder
            # serves), so the test pays for the pipeline, not for MiniLM; the other tests use MiniLM
            f"iqn.embedder={tiny_bert}",
            "iqn.pool=256",
            "workers=2",
            "batch_size=8",
            storage=[f"storage.endpoint_url={s3_server.endpoint}"],
        )
        started = time.monotonic()
        result = run_augment_job(cfg, SecretStr(KEY))
        seconds = time.monotonic() - started
        first = sim.stats.summary()
        again = run_augment_job(cfg, SecretStr(KEY))
        second = sim.stats.summary()
    print(f"{ROWS} rows augmented in {seconds:.0f} s; {first['answered']} simulator answers")
    return {
        "cfg": cfg,
        "result": result,
        "again": again,
        "projection": result.details["projection"],
        "sim": first,
        "sim_after_rerun": second,
        "storage": StorageConfig(endpoint_url=s3_server.endpoint),
    }


def read(run: RunFolder, table: str):
    return run.read_table(table)


@pytest.mark.ray
@pytest.mark.slow
def test_every_source_row_is_accounted_for_and_every_kind_of_pair_is_made(sample_run):
    result = sample_run["result"]
    run = RunFolder.from_uri(result.run.uri, sample_run["storage"])
    pairs = read(run, "pairs")
    kinds = Counter(pairs.column("kind").to_pylist())
    assert set(kinds) == set(KIND_NAMES) - {"rrm_prefer", "rrm_tie"}  # all of Crome's kinds
    # the first ROWS pairs are the originals here; every line of the source is a pair of the
    # ingest run, or that run says where it went
    ingest = RunFolder.from_uri(result.manifest["inputs"]["pairs"]["uri"], sample_run["storage"])
    c = ingest.manifest()["counts"]
    originals = set(pairs.filter(_is(pairs, "original")).column("source_id").to_pylist())
    assert len(originals) == ROWS == result.counts["source_rows"] < c["pairs_written"]
    assert c["records_read"] == 1000 == sum(1 for _ in SAMPLE.open())
    assert c["pairs_written"] + c["quarantined"] + c["ties_dropped"] + c["unpaired"] == 1000
    # every augmented pair points back at a source pair, and every causal pair names its attribute
    assert set(pairs.column("source_id").to_pylist()) <= originals
    causal = pairs.filter(_is(pairs, "causal_degrade", "causal_upgrade"))
    assert all(causal.column("attribute").to_pylist()) and all(causal.column("request_keys").to_pylist())
    ties = pairs.filter(_is(pairs, "neutral_iqn", "neutral_can", "neutral_para"))
    assert set(ties.column("label").to_pylist()) == {"tie"}
    assert pairs.schema.remove_metadata() == AUGMENTED_PAIR_SCHEMA.remove_metadata()


def _is(table, *kinds):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_in(table.column("kind"), value_set=pa.array(kinds))


@pytest.mark.ray
@pytest.mark.slow
def test_the_manifest_counts_match_the_files(sample_run):
    result = sample_run["result"]
    run = RunFolder.from_uri(result.run.uri, sample_run["storage"])
    counts, details = result.counts, result.details
    pairs = read(run, "pairs")
    assert counts["pairs"] == pairs.num_rows == result.manifest["tables"]["pairs"]["rows"]
    for kind, n in Counter(pairs.column("kind").to_pylist()).items():
        assert counts[f"pairs_{kind}"] == n
    assert counts["ratio_to_source"] == round(pairs.num_rows / counts["source_rows"], 3)
    for table in ("rejected", "controls"):
        assert counts[table] == read(run, table).num_rows
    rejected = read(run, "rejected")
    by = Counter(
        f"{s}:{c or k}"
        for s, c, k in zip(*(rejected.column(x).to_pylist() for x in ("stage", "check", "kind")), strict=True)
    )
    assert details["rejected_by"] == dict(by)
    controls = read(run, "controls")
    # the first 10 examples, two probes each for the causal verifier and for each neutral one
    # (tasks.verify_neutrals auto: on, the oracle is not a small local model)
    assert Counter(controls.column("verifier").to_pylist()) == {
        "causal": 20,
        "neutral_can": 20,
        "neutral_para": 20,
    }
    for verifier in ("causal", "neutral_can", "neutral_para"):
        assert details["controls"][verifier]["false_pass_rate"] == 0.0  # the simulator fails every control
    assert details["verify_neutrals"] is True
    assert (
        details["leakage"]["lexical_overlap"]["n"]
        == counts["pairs"] - counts["pairs_original"] - counts["pairs_neutral_iqn"]
    )
    assert details["backends"] == {f"gemini {MODEL}": details["leakage"]["lexical_overlap"]["n"]}


@pytest.mark.ray
@pytest.mark.slow
def test_spend_stays_under_the_cap_and_the_dry_run_projects_it_within_15_percent(sample_run):
    result, sim, cfg = sample_run["result"], sample_run["sim"], sample_run["cfg"]
    oracle = result.details["oracle"]
    billed = billed_usd(sim)
    assert 0 < billed <= oracle["spent_usd"] <= float(cfg.oracle.budget.cap_usd)
    # a request is paid twice only when its first answer was not valid JSON (a retry); every
    # answer the simulator gave was granted by the governor
    assert sim["billed_twice"] <= oracle["invalid_output"] and sim["answered"] <= oracle["grants"]
    projected = sample_run["projection"]["usd"]
    print(f"projected ${projected:.4f}, billed ${billed:.4f} ({projected / billed - 1:+.1%})")
    assert abs(projected / billed - 1) <= 0.15
    assert sample_run["projection"]["total_calls"] >= sim["answered"]  # the call count is an upper bound


@pytest.mark.ray
@pytest.mark.slow
def test_a_rerun_of_a_committed_run_is_a_no_op(sample_run):
    assert sample_run["again"].skipped
    assert sample_run["again"].run.uri == sample_run["result"].run.uri
    assert sample_run["sim_after_rerun"]["requests"] == sample_run["sim"]["requests"]


@pytest.mark.ray
def test_a_cap_below_the_projection_refuses_to_start_unless_partial_runs_are_allowed(tmp_path, ray_cluster):
    with (
        RunningSimulator(SimConfig(latency_median_s=0.0)) as sim,
        RunningSimulator(SimConfig(latency_median_s=0.0)) as local,
    ):
        cheap = ["limit=6", "tasks.attributes=2", "oracle.budget.cap_usd=0.002", "controls.examples=0"]
        cfg = config(sim, tmp_path / "runs", *cheap)
        projection = dry_run(cfg)
        assert projection["usd"] > 0.002 and not projection["within_cap"]
        with pytest.raises(AugmentError, match=r"more than the cap.*--allow-partial"):
            run_augment_job(cfg, SecretStr(KEY))
        assert sim.stats.requests == 0 and sim.stats.model_gets == 0  # refused before any call

        partial = run_augment_job(
            config(sim, tmp_path / "runs", *cheap, "allow_partial=true", "run_name=partial"), SecretStr(KEY)
        )
        spent = partial.details["oracle"]["spent_usd"]
        assert billed_usd(sim.stats.summary()) <= spent <= 0.002
        assert partial.details["quarantine_by"].get("budget_exhausted", 0) > 0
        assert partial.counts["pairs_original"] == 6  # the rest of the data goes on

        # with a fallback, the calls past the cap go to the second oracle (a second simulator here,
        # standing in for the local engine), and nothing is left out of budget
        fb = [
            "fallback.policy=on_budget",
            "fallback.oracle.backend=gemini",
            "fallback.oracle.model=gemini-2.0-flash",
            f"fallback.oracle.base_url={local.url}",
            "fallback.oracle.budget.cap_usd=5",
            "run_name=with-fallback",
            "allow_partial=true",
        ]
        served = run_augment_job(
            config(sim, tmp_path / "runs2", *cheap, *fb), SecretStr(KEY), fallback_key=SecretStr(KEY)
        )
    assert "budget_exhausted" not in served.details["quarantine_by"]
    assert served.details["fallback"]["grants"] == local.stats.answered > 0
    assert set(served.details["backends"]) == {f"gemini {MODEL}", "gemini gemini-2.0-flash"}
    assert served.details["oracle"]["spent_usd"] <= 0.002


@pytest.mark.ray
@pytest.mark.slow
def test_the_driver_killed_part_way_then_resumed_pays_only_for_calls_not_yet_answered(tmp_path):
    with RunningSimulator(SimConfig(latency_median_s=0.1, latency_sigma=0.2)) as sim:
        config = {
            "run_name": "resume",
            "input": str(SAMPLE),
            "limit": 16,
            "leakage_embeddings": False,
            "tasks": {"attributes": 1, "elements": False, "iqn": False},  # no embedder to load
            "controls": {"examples": 0},
            "workers": 2,
            "batch_size": 2,
            "oracle": {
                "base_url": sim.url,
                "model": MODEL,
                "budget": {"cap_usd": 1.0},
                "quota": {"max_in_flight": 16},
                "retry": {"timeout_s": 5},
            },
            "storage": {"root": str(tmp_path / "runs")},
        }
        run = kill_then_resume(
            "augment",
            config,
            sim,
            key=KEY,
            answered=50,
            folder=tmp_path,
            first_timeout=180,
            resume_timeout=400,
        )
        stats = sim.stats.summary()
    assert "training pairs" in run.second.stdout and "train on it" in run.second.stdout
    manifest = RunFolder.at(str(tmp_path / "runs"), "augment", "resume").manifest()
    oracle = manifest["details"]["oracle"]
    # the resumed run found what the killed one was answered in the cache; only calls in flight
    # at the kill (at most max_in_flight) can have been billed twice
    assert oracle["hits"] >= run.answered_at_kill - 16
    assert stats["billed_twice"] <= 16
    assert oracle["grants"] + oracle["hits"] >= stats["distinct_answered"] - 16
    assert manifest["counts"]["pairs_original"] == 16
    assert billed_usd(stats) <= oracle["spent_usd"] <= 1.0


@pytest.mark.ray
def test_a_verifier_that_passes_the_controls_stops_the_run_and_commits_nothing(tmp_path, ray_cluster):
    with RunningSimulator(SimConfig(latency_median_s=0.0, p_false_pass=1.0)) as sim:
        cfg = config(
            sim,
            tmp_path / "runs",
            "limit=4",
            "tasks.attributes=1",
            "tasks.elements=false",
            "controls.examples=2",
            "controls.max_false_pass_rate=0.2",
            "run_name=lazy-judge",
        )
        with pytest.raises(
            AugmentError, match=r"passed 4 of 4 control probes .* > controls.max_false_pass_rate"
        ):
            run_augment_job(cfg, SecretStr(KEY))
    assert not RunFolder.at(str(tmp_path / "runs"), "augment", "lazy-judge").is_committed()


@pytest.mark.ray
def test_the_baseline_filter_scores_every_pair_and_moves_the_ones_it_is_sure_of_aside(
    tmp_path, ray_cluster, tiny_bert
):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from crome_ray.augment.pairs import keep_after_filter
    from crome_ray.train.score import RewardScorer

    torch.manual_seed(0)  # a baseline RM with a random head: its p is what it is, the rule must hold
    baseline = tmp_path / "baseline"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1).save_pretrained(baseline)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(baseline)
    with RunningSimulator(SimConfig(latency_median_s=0.0)) as sim:
        cfg = config(
            sim,
            tmp_path / "runs",
            "limit=4",
            "tasks.attributes=1",
            "tasks.elements=false",
            "controls.examples=0",
            "tasks.iqn=false",
            "workers=1",
            f"filter.model={baseline}",
            "filter.tau=0.2",
            "filter.max_length=128",
        )
        result = run_augment_job(cfg, SecretStr(KEY))
    kept, aside = result.run.read_table("pairs").to_pylist(), result.run.read_table("filtered").to_pylist()
    assert aside and result.counts["filtered"] == len(aside)
    assert all(r["baseline_p"] is not None for r in kept + aside)  # every pair scored, originals too
    for r in kept:
        assert r["kind"] == "original" or keep_after_filter(r["baseline_p"], r["label"], 0.2)
    for r in aside:
        assert r["kind"] != "original" and not keep_after_filter(r["baseline_p"], r["label"], 0.2)
    # p is P(B ≻ A) from the baseline, not the other way round
    scorer = RewardScorer(str(baseline), max_length=128)
    r = aside[0]
    ra, rb = scorer.score([r["prompt"]] * 2, [r["chosen"], r["rejected"]])
    assert r["baseline_p"] == pytest.approx(1 / (1 + math.exp(ra - rb)), abs=1e-4)


@pytest.mark.ray
def test_stages_that_leave_ray_data_no_whole_cpu_are_refused_with_the_figures_not_left_to_hang(
    ray_cluster, monkeypatch
):
    from crome_ray.augment.graph import check_cpu_headroom

    logged: list[str] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_cpu_headroom({"iqn.cpus": 0.5, "the oracle stage": 0.5}, logged.append)  # 2 CPUs: 1 left
    with pytest.raises(AugmentError, match=r"reserve 1.5 of the cluster's 2 CPUs \(iqn.cpus 0.5, the oracle"):
        check_cpu_headroom({"iqn.cpus": 0.5, "the oracle stage": 1.0, "filter": 0.0}, logged.append)
    assert logged == []
    monkeypatch.setenv("RAY_ADDRESS", "ray://a-cluster-that-may-grow:10001")
    check_cpu_headroom({"iqn.cpus": 0.5, "the oracle stage": 1.0}, logged.append)
    assert len(logged) == 1 and logged[0].startswith("warning: the stages' actors reserve 1.5")
