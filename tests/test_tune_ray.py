"""The λ sweep as a user runs it: `python jobs/tune.py --config ...` against a cluster of its own
started with `ray start --head` and the dashboard (whose state API frees a stopped trial's
workers). `make test-sweep`, not in `make test`: CI runs the same sweep as the Crome step of
the pipeline it submits (tests/test_submit.py), which saves this test's cluster and data. Three
values of λ with a tiny model on CPU, ASHA on the validation BT loss. The validation pairs are
among the training pairs, so a larger λ (a stronger pull of the ties' rewards together) can only
fit them worse: λ = 0 starts first and sets the bar, and ASHA must stop a trial that trails it. The report and
plot are written, the best trial's model is a committed training run's."""

import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pytest
import yaml

from crome_ray.storage import RunFolder
from crome_ray.tune.job import pick_best, trial_run_name
from tests.conftest import free_port
from tests.test_cluster import stop_cluster

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.sweep]

LAMBDAS = [0.0, 1.0, 30.0]


def write_pairs(path: Path, rows: list[dict], label: str) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "label": label}
            )
            + "\n"
            for r in rows
        )
    )
    return path


def visible(text):  # the ingest quarantines a text with nothing visible (U+200B alone, in the sample)
    return any(not unicodedata.category(ch).startswith(("Z", "C")) for ch in text)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_llama, samples):
    tmp = tmp_path_factory.mktemp("tune")
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()]
    rows = [
        r for r in rows if visible(r["chosen"]) and visible(r["rejected"]) and r["chosen"] != r["rejected"]
    ]
    prefs, ties = rows[:24], rows[24:48]
    train = tmp / "train.jsonl"
    train.write_text(
        write_pairs(tmp / "p.jsonl", prefs, "chosen").read_text()
        + write_pairs(tmp / "t.jsonl", ties, "tie").read_text()
    )
    val = write_pairs(tmp / "val.jsonl", prefs[:16], "chosen")
    config = {
        "job": "tune",
        "run_name": "sweep",
        "train": {
            "model": str(tiny_llama),
            "train_data": str(train),
            "eval_data": str(val),
            "max_steps": 6,
            "eval_every": 2,
            "max_length": 64,
            "batch_size": 8,
            "lora": {"r": 4},
            "optim": {"lr": 0.01},
            "scaling": {"workers": 1, "cpus_per_worker": 0.5},
        },
        "sweep": {"tie_weights": LAMBDAS, "seeds": [0], "metric": "eval_loss_bt", "mode": "min",
                  "reduction_factor": 2},
        "storage": {"root": str(tmp / "runs")},
    }  # fmt: skip
    (tmp / "tune.yaml").write_text(yaml.safe_dump(config))
    ray_tmp = tempfile.mkdtemp(prefix="crt", dir="/tmp")
    bin_dir = Path(sys.executable).parent
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
           "RAY_ADDRESS": f"127.0.0.1:{gcs}"}  # fmt: skip
    start = [str(bin_dir / "ray"), "start", "--head", "--num-cpus=2", f"--port={gcs}",
             f"--temp-dir={ray_tmp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}",
             f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
             "--disable-usage-stats"]  # fmt: skip
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=120)
        proc = subprocess.run(
            [sys.executable, "jobs/tune.py", "--config", str(tmp / "tune.yaml")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        stop_cluster(ray_tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from crome_ray.runs import StepResult

    run = RunFolder.from_uri(str(tmp / "runs" / "tune" / "sweep"))
    result = StepResult(run, False, run.manifest())
    return {"result": result, "output": proc.stdout, "tmp": tmp}


def test_asha_stops_at_least_one_trial_early_and_the_rest_complete(sweep):
    result = sweep["result"]
    trials = result.run.read_table("trials").to_pylist()
    assert sorted(t["tie_weight"] for t in trials) == LAMBDAS
    stopped = [t for t in trials if t["status"] == "stopped_early"]
    assert stopped, trials
    assert all(t["evaluations"] < 3 for t in stopped)  # 6 steps, an evaluation every 2: 3 at the end
    completed = [t for t in trials if t["status"] == "completed"]
    assert completed and all(t["evaluations"] == 3 and t["step"] == 6 for t in completed)
    assert 0.0 in [t["tie_weight"] for t in completed]  # the first trial has nothing to trail
    assert not [t for t in trials if t["status"] == "failed"]
    # a stopped trial's training run never committed; a completed one did
    for t in trials:
        assert RunFolder.from_uri(t["run_uri"]).is_committed() == (t["status"] == "completed")
    assert result.counts == {
        "trials": 3,
        "completed": len(completed),
        "stopped_early": len(stopped),
        "failed": 0,
    }


def test_the_best_trial_is_the_best_completed_one_and_its_model_is_committed(sweep):
    result = sweep["result"]
    trials = result.run.read_table("trials").to_pylist()
    best = result.details["best"]
    assert best == pick_best(trials, "min")
    assert best["metric"] == min(t["metric"] for t in trials if t["status"] == "completed")
    assert best["run_uri"].endswith("/train/" + trial_run_name("sweep", best["tie_weight"], best["seed"]))
    assert Path(result.details["best_model"], "config.json").is_file()
    manifest = RunFolder.from_uri(best["run_uri"]).manifest()
    assert manifest["config"]["loss"]["tie_weight"] == best["tie_weight"]
    # lineage: the sweep's inputs are the data runs the trials trained on
    assert set(result.manifest["inputs"]) == {"train", "eval"}
    assert manifest["inputs"]["train"]["uri"] == result.manifest["inputs"]["train"]["uri"]


def test_the_report_and_the_lambda_plot_are_written(sweep):
    from PIL import Image

    run = sweep["result"].run
    md = Path(run.file("report.md")).read_text()
    assert "stopped_early" in md and "Best: λ =" in md
    with Image.open(run.file("lambda.png")) as img:
        assert img.format == "PNG" and img.size == (700, 450)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 2
    doc = json.loads(Path(run.file("report.json")).read_text())
    assert doc["stopped_early"] >= 1 and len(doc["trials"]) == 3
    out = sweep["output"]  # what the job printed: the trials' table, the best λ and its model
    assert "stopped_early" in out and "best λ = " in out and "best model:" in out
