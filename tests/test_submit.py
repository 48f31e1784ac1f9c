"""The cluster path end to end: `ray start --head`, then `ray job submit` of the pipeline, as on a
cloud cluster. The storage root is a bucket on the S3 server (moto, the real protocol), the oracle
the Gemini simulator (the real google-genai client over HTTP) with its key in the cluster's
environment, as a secret store would put it there. The pipeline is the demo's, at the size
`crome-ray demo --quick` runs (crome_ray.demo.QUICK), with two examples through the oracle and
the baseline filter on (the demo turns it off: its near-chance baseline would drop every tie).
A second submission of the same pipeline finds every step committed and does nothing."""

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from crome_ray.config import StorageConfig
from crome_ray.demo import QUICK
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.storage import RunFolder
from tests.conftest import free_port
from tests.test_cluster import stop_cluster

REPO = Path(__file__).resolve().parents[1]
KEY = "sim-key-7f3a9c"  # the simulator checks none; the test checks it is never printed

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def submitted(s3_server, tmp_path_factory):
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/crome"
    bin_dir = Path(sys.executable).parent
    ray_tmp = tempfile.mkdtemp(prefix="crs", dir="/tmp")
    dash = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
        "GEMINI_API_KEY": KEY,  # the cluster's environment: the job's driver inherits it
    }
    start = [str(bin_dir / "ray"), "start", "--head", "--num-cpus=2", f"--port={free_port()}",
             f"--temp-dir={ray_tmp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={free_port()}",
             f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]  # fmt: skip
    with RunningSimulator(SimConfig(latency_median_s=0.0, seed=3)) as sim:
        job = [str(bin_dir / "ray"), "job", "submit", "--working-dir", ".", "--runtime-env",
               "cluster/runtime_env.yaml", "--", "python", "jobs/pipeline.py", "--config",
               "jobs/configs/pipeline_demo.yaml", *QUICK, "augment.oracle_examples=2", "baseline_filter=true",
               f"augment.oracle.base_url={sim.url}", f"storage.root={root}",
               f"storage.endpoint_url={s3_server.endpoint}"]  # fmt: skip
        try:
            subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=120)
            runs = [
                subprocess.run(job, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
                for _ in range(2)
            ]
        finally:
            stop_cluster(ray_tmp)
    for proc in runs:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    storage = StorageConfig(root=root, endpoint_url=s3_server.endpoint)
    return {"runs": runs, "root": root, "storage": storage}


def test_the_submitted_pipeline_commits_every_step_on_s3_each_reading_the_one_before(submitted):
    first = submitted["runs"][0].stdout
    assert "succeeded" in first
    storage = submitted["storage"]
    run = RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage)
    manifest = run.manifest()
    steps = {s["name"]: s for s in manifest["details"]["steps"]}
    assert list(steps) == ["ingest", "baseline", "augment", "crome", "evaluate"]
    assert all(s["done"] and s["uri"].startswith("s3://") for s in steps.values())
    uri = {k: s["uri"] for k, s in steps.items()}
    inputs = {k: RunFolder.from_uri(u, storage).manifest()["inputs"] for k, u in uri.items()}
    assert inputs["baseline"]["train"]["uri"] == uri["ingest"]
    assert inputs["augment"]["pairs"]["uri"] == uri["ingest"]
    assert inputs["augment"]["baseline"]["uri"] == uri["baseline"]  # the filter scored with it
    assert inputs["crome"]["train"]["uri"] == uri["augment"]
    assert {inputs["evaluate"][f"model:{m}"]["uri"] for m in ("baseline", "crome")} == {
        uri["baseline"],
        uri["crome"],
    }
    assert set(manifest["inputs"]) == set(steps)
    # the augmentation: the simulated Gemini served the first two examples; all 40 got their IQN tie
    augment = RunFolder.from_uri(uri["augment"], storage)
    rows = [
        r for t in ("pairs", "filtered") if augment.table_files(t) for r in augment.read_table(t).to_pylist()
    ]
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["original"] == 40 and kinds["neutral_iqn"] == 40
    oracle_made = [r for r in rows if r["kind"] not in ("original", "neutral_iqn")]
    assert oracle_made and {r["backend"] for r in oracle_made} == {"gemini"}
    assert len({r["source_id"] for r in oracle_made}) <= 2
    # the evaluation: both models side by side; the report is on S3
    report = augment.fs.open(RunFolder.from_uri(uri["evaluate"], storage).committed().file("report.json"))
    assert set(json.loads(report.read())["models"]) == {"baseline", "crome"}
    assert manifest["details"]["report"] == RunFolder.from_uri(uri["evaluate"], storage).committed().uri_of(
        "report.md"
    )
    assert "report:" in first and "baseline" in first and "crome" in first


def test_a_second_submission_of_the_same_pipeline_does_nothing(submitted):
    second = submitted["runs"][1].stdout
    assert "succeeded" in second
    assert second.count("committed already") == 5
    assert "found" in second and " done " not in second


def test_the_key_never_appears_in_the_jobs_output_or_the_manifests(submitted):
    for proc in submitted["runs"]:
        assert KEY not in proc.stdout + proc.stderr
    storage = submitted["storage"]
    run = RunFolder.from_uri(f"{submitted['root']}/pipeline/demo", storage)
    for step in run.manifest()["details"]["steps"]:
        assert KEY not in json.dumps(RunFolder.from_uri(step["uri"], storage).manifest())
