"""The cluster path end to end: `ray start --head`, then `ray job submit` of the pipeline and of
the augmentation job, as on a cloud cluster. The storage root is a bucket on the S3 server (moto,
the real protocol), the oracle the Gemini simulator (the real google-genai client over HTTP) with
its key in the cluster's environment, as a secret store would put it there.

The pipeline is the demo's at the size `crome-ray demo --quick` runs (crome_ray.pipeline.demo.QUICK), with
its planted-attribute self-check (a planting step, and a positive control beside the baseline and
Crome), two examples through the oracle, a tiny Llama for the reward models, and the λ sweep (Ray Tune,
ASHA) as its Crome step, each trial long enough after its first evaluation for ASHA's stop to
reach it before it commits. The sweep's validation pairs are among its training pairs, so a larger λ
(a stronger pull of the ties' rewards together) can only fit them worse: λ = 0 runs first and sets
the bar, and ASHA stops a trial that trails it (tests/test_tune_ray.py holds the same property on
hand-made data). A second submission of the same pipeline finds every step committed and does
nothing. Then the augmentation job is submitted on its own: the pipeline's augmentation with the
baseline filter on (the demo turns it off), reading the pipeline's runs; every oracle call it
makes was paid for by the pipeline, so the cache serves them all."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.job import run_name as augment_run_name
from crome_ray.config import StorageConfig
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.pipeline.demo import QUICK
from crome_ray.storage import RunFolder
from tests.conftest import free_port
from tests.test_cluster import stop_cluster

REPO = Path(__file__).resolve().parents[1]
KEY = "sim-key-7f3a9c"  # the simulator checks none; the test checks it is never printed

pytestmark = [pytest.mark.ray, pytest.mark.slow]


LAMBDAS = [0.0, 1.0, 30.0]
SOURCE = "data/samples/ultrafeedback/train_1k.jsonl"  # the demo's source, relative to the working dir


def pipeline_overrides(tiny_llama: Path, sim_url: str, root: str, endpoint: str) -> list[str]:
    tiny = [f"{rm}.model={tiny_llama}" for rm in ("baseline", "crome")]
    sweep = ["crome.finetune=lora", "crome.lora.r=4", "crome.optim.lr=0.01", "crome.batch_size=8",
             "crome.max_steps=30", "crome.eval_every=10", f"crome.eval_data={SOURCE}", "crome.eval_limit=16",
             f"sweep.tie_weights={LAMBDAS}", "sweep.metric=eval_loss_bt", "sweep.mode=min",
             "sweep.reduction_factor=2"]  # fmt: skip
    where = [f"augment.oracle.base_url={sim_url}", f"storage.root={root}", f"storage.endpoint_url={endpoint}"]
    evaluation = ["evaluate.transformations=[add_quotes, rot13, word_deletion]"]
    return [*QUICK, "augment.oracle_examples=2", *tiny, *sweep, *evaluation, *where]


def filtered_augment_config(overrides: list[str], storage: StorageConfig, pipeline_uri: str) -> AugmentConfig:
    """The pipeline's augmentation config with the baseline filter on, on the pipeline's runs."""
    from crome_ray.config import load_config
    from crome_ray.pipeline.config import PipelineConfig
    from crome_ray.pipeline.job import augment_config

    cfg = load_config(PipelineConfig, REPO / "jobs" / "configs" / "pipeline_demo.yaml", overrides)
    steps = {
        s["name"]: s["uri"] for s in RunFolder.from_uri(pipeline_uri, storage).manifest()["details"]["steps"]
    }
    on = cfg.model_copy(update={"baseline_filter": True})
    return augment_config(on, steps["plant"], steps["baseline"])  # the self-check's planted pairs


@pytest.fixture(scope="module")
def submitted(s3_server, tmp_path_factory, tiny_llama):
    import yaml

    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/crome"
    storage = StorageConfig(root=root, endpoint_url=s3_server.endpoint)
    tmp = tmp_path_factory.mktemp("submit")
    bin_dir = Path(sys.executable).parent
    ray_tmp = tempfile.mkdtemp(prefix="crs", dir="/tmp")
    dash = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
        "GEMINI_API_KEY": KEY,  # the cluster's environment: the job's driver inherits it
        # a trial's reports reach Tune when Ray Train's controller polls its workers (every 2 s by
        # default); a tiny model's trial could finish in that time, before ASHA's stop reached it
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    }
    # two nodes, as a cloud cluster: a head that takes no CPU work (the job drivers run there,
    # with the key in its environment, as the cluster configs put it there from the secret store)
    # and a worker node with the CPUs and no key, where the oracle actors, the trainings and the
    # sweep's trials run
    port = free_port()
    start = [str(bin_dir / "ray"), "start", "--head", "--num-cpus=0", f"--port={port}",
             f"--temp-dir={ray_tmp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={free_port()}",
             f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]  # fmt: skip
    # its own temp folder, as a node of its own has: where both shared one, the worker node's
    # runtime-env agent deleted the job's unpacked working dir under the driver (seen:
    # "[Errno 2] No such file or directory", the driver's working folder gone)
    worker_tmp = tempfile.mkdtemp(prefix="crw", dir="/tmp")
    worker = [str(bin_dir / "ray"), "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
              f"--temp-dir={worker_tmp}", f"--node-manager-port={free_port()}",
              f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
              "--disable-usage-stats"]  # fmt: skip
    worker_env = {k: v for k, v in env.items() if k not in ("GEMINI_API_KEY", "RAY_ADDRESS")}
    submit = [str(bin_dir / "ray"), "job", "submit", "--working-dir", ".", "--runtime-env",
              "cluster/runtime_env.yaml", "--", "python"]  # fmt: skip

    def job(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*submit, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        return proc

    with RunningSimulator(SimConfig(latency_median_s=0.0, seed=3)) as sim:
        overrides = pipeline_overrides(tiny_llama, sim.url, root, s3_server.endpoint)
        pipeline = ["jobs/pipeline.py", "--config", "jobs/configs/pipeline_demo.yaml", *overrides]
        try:
            subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=120)
            subprocess.run(worker, env=worker_env, check=True, capture_output=True, text=True, timeout=120)
            runs = [job(*pipeline) for _ in range(2)]
            paid = sim.stats.answered
            augment_cfg = filtered_augment_config(overrides, storage, f"{root}/pipeline/demo")
            augment_yaml = tmp / "augment.yaml"
            augment_yaml.write_text(yaml.safe_dump(augment_cfg.model_dump(mode="json")))
            augment = job("jobs/augment.py", "--config", str(augment_yaml))
        finally:
            stop_cluster(ray_tmp)
            stop_cluster(worker_tmp)
        billed = {
            "by_the_pipeline": paid,
            "in_all": sim.stats.answered,
            "twice": sim.stats.summary()["billed_twice"],
        }
    alone = RunFolder.at(root, "augment", augment_run_name(augment_cfg), storage)
    yield {
        "runs": runs,
        "augment": augment,
        "alone": alone,
        "root": root,
        "storage": storage,
        "billed": billed,
        "node_folders": [ray_tmp, worker_tmp],
    }
    for folder in (ray_tmp, worker_tmp):
        shutil.rmtree(folder, ignore_errors=True)


def test_the_submitted_pipeline_commits_every_step_on_s3_each_reading_the_one_before(submitted):
    first = submitted["runs"][0].stdout
    assert "succeeded" in first
    storage = submitted["storage"]
    run = RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage)
    manifest = run.manifest()
    steps = {s["name"]: s for s in manifest["details"]["steps"]}
    assert list(steps) == ["ingest", "plant", "baseline", "augment", "crome", "control", "evaluate"]
    assert all(s["done"] and s["uri"].startswith("s3://") for s in steps.values())
    uri = {k: s["uri"] for k, s in steps.items()}
    inputs = {k: RunFolder.from_uri(u, storage).manifest()["inputs"] for k, u in uri.items()}
    assert inputs["plant"]["pairs"]["uri"] == uri["ingest"]  # the demo's self-check is on
    assert inputs["baseline"]["train"]["uri"] == uri["plant"]
    assert inputs["augment"]["pairs"]["uri"] == uri["plant"]
    assert "baseline" not in inputs["augment"]  # the demo's pipeline leaves the filter off
    assert inputs["crome"]["train"]["uri"] == uri["augment"]  # the sweep trained on the augmentation
    crome = manifest["details"]["crome_model"]
    assert {inputs["evaluate"][f"model:{m}"]["uri"] for m in ("baseline", "crome")} == {
        uri["baseline"],
        crome,
    }
    assert set(manifest["inputs"]) == set(steps)
    # the augmentation: the simulated Gemini served the first two examples; all 40 got their IQN tie
    augment = RunFolder.from_uri(uri["augment"], storage)
    rows = augment.read_table("pairs").to_pylist()
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["original"] == 40 and kinds["neutral_iqn"] == 40
    oracle_made = [r for r in rows if r["kind"] not in ("original", "neutral_iqn")]
    assert oracle_made and {r["backend"] for r in oracle_made} == {"gemini"}
    assert len({r["source_id"] for r in oracle_made}) <= 2
    # the evaluation: both models side by side; the report is on S3
    evaluation = RunFolder.from_uri(uri["evaluate"], storage).committed()
    report = json.loads(augment.fs.open(evaluation.file("report.json")).read())
    assert set(report["models"]) == {"baseline", "crome", "control"}
    assert manifest["details"]["report"] == evaluation.uri_of("report.md")
    assert "report:" in first and "baseline" in first and "crome" in first
    # the self-check: the control trained as the chosen trial did, on the planted pairs and exact ties
    control = RunFolder.from_uri(uri["control"], storage).manifest()
    control_data = RunFolder.from_uri(control["inputs"]["train"]["uri"], storage)
    assert control_data.manifest()["inputs"]["pairs"]["uri"] == uri["ingest"]
    kinds = Counter(r["kind"] for r in control_data.read_table("pairs").to_pylist())
    assert kinds == {"original": 40, "neutral_exact": control_data.manifest()["counts"]["planted"]}
    sweep = RunFolder.from_uri(uri["crome"], storage).manifest()["details"]["best"]
    assert control["config"]["loss"]["tie_weight"] == sweep["tie_weight"]
    checked = manifest["details"]["selfcheck"]
    assert checked["position"] == "end"  # a decoder keeps the end of a long answer
    cue = RunFolder.from_uri(uri["evaluate"], storage).manifest()["config"]["cue"]
    assert (cue["text"], cue["position"]) == (checked["attribute"], "end")
    assert "self-check: the planted attribute" in first and checked["lines"][0] in first


def test_the_pipelines_sweep_stops_a_trailing_lambda_early_and_its_best_trial_is_the_crome_model(submitted):
    from crome_ray.tune.job import pick_best

    storage = submitted["storage"]
    manifest = RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage).manifest()
    sweep = RunFolder.from_uri(
        next(s["uri"] for s in manifest["details"]["steps"] if s["name"] == "crome"), storage
    )
    assert "/tune/" in sweep.uri
    trials = sweep.read_table("trials").to_pylist()
    assert sorted(t["tie_weight"] for t in trials) == LAMBDAS
    stopped = [t for t in trials if t["status"] == "stopped_early"]
    completed = [t for t in trials if t["status"] == "completed"]
    seen = [(t["tie_weight"], t["status"], t["evaluations"], t["metric"]) for t in trials]
    assert stopped and all(t["evaluations"] < 3 for t in stopped), seen  # 30 steps, an evaluation every 10
    assert 0.0 in [t["tie_weight"] for t in completed]  # the first trial has nothing to trail
    details = sweep.manifest()["details"]
    best = details["best"]
    # the pipeline's sweep chooses among trials near the best clean accuracy (clean_tolerance 0.02)
    assert details["clean_tolerance"] == 0.02 and all(t["clean_accuracy"] is not None for t in completed)
    assert best == pick_best(trials, "min", 0.02) and best["status"] == "completed"
    assert manifest["details"]["crome_model"] == RunFolder.from_uri(best["run_uri"], storage).uri
    assert sweep.fs.exists(sweep.committed().file("lambda.png"))


def test_a_second_submission_of_the_same_pipeline_does_nothing(submitted):
    second = submitted["runs"][1].stdout
    assert "succeeded" in second
    assert second.count("committed already") == 7
    assert "found" in second and " done " not in second


def test_the_augmentation_submitted_alone_filters_with_the_baseline_and_pays_for_no_call_again(submitted):
    out = submitted["augment"].stdout
    assert "succeeded" in out
    storage = submitted["storage"]
    steps = {
        s["name"]: s["uri"]
        for s in RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage).manifest()["details"][
            "steps"
        ]
    }
    alone = submitted["alone"]
    assert alone.is_committed() and alone.uri != steps["augment"]  # a run of its own: the filter is on
    manifest = alone.manifest()
    assert manifest["inputs"]["pairs"]["uri"] == steps["plant"]
    assert manifest["inputs"]["baseline"]["uri"] == steps["baseline"]  # the filter scored with it
    counts = manifest["counts"]
    assert counts["pairs_original"] == 40
    # the same cached answers make the same pairs as the pipeline's; the filter only moves some aside
    made = RunFolder.from_uri(steps["augment"], storage).manifest()["counts"]["pairs"]
    assert counts["pairs"] + counts["filtered"] == made and counts["filtered"] > 0
    billed = submitted["billed"]
    assert billed["in_all"] == billed["by_the_pipeline"] > 0 and billed["twice"] == 0
    assert manifest["details"]["oracle"]["hits"] > 0  # what it asked, the pipeline's cache answered


def test_the_key_never_appears_in_the_jobs_output_the_manifests_any_nodes_logs_or_the_bucket(submitted):
    """The key was in the head's environment only; the oracle actors on the worker node got it
    from the job's driver (the calls were answered: the augmentation test above), and it is in no
    file of either node's log folder (the workers' .out and .err included), no object the jobs
    wrote and none of the jobs' output."""
    from crome_ray.storage import filesystem

    for proc in [*submitted["runs"], submitted["augment"]]:
        assert KEY not in proc.stdout + proc.stderr
    storage = submitted["storage"]
    run = RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage)
    for step in run.manifest()["details"]["steps"]:
        assert KEY not in json.dumps(RunFolder.from_uri(step["uri"], storage).manifest())
    for folder in submitted["node_folders"]:  # the head's, the worker node's
        # the shipped working dir aside: it is this repository, this file (and its KEY) included
        files = [p for p in Path(folder).rglob("*")
                 if p.is_file() and not p.is_symlink() and "working_dir_files" not in p.parts]  # fmt: skip
        assert any(p.name == "raylet.out" for p in files)  # a node's logs, and its workers'
        assert any(p.name.startswith("worker-") and p.suffix == ".err" for p in files)
        assert not [p for p in files if KEY.encode() in p.read_bytes()]
    fs, path = filesystem(submitted["root"], storage)
    objects = fs.find(path)
    assert any(o.endswith(".parquet") for o in objects)
    assert not [o for o in objects if KEY.encode() in fs.cat_file(o)]
