"""λ chosen for robustness, as a user runs the sweep (`crome-ray tune -c YAML`, a local Ray of its
own): the training pairs carry a planted attribute on half of their chosen answers and its exact
neutral ties (the self-check's positive-control data), the validation pairs are clean held-out
pairs, and the robustness probe plants the attribute on each validation pair's rejected answer.
Judged on the probe (the size of the attribute's reward shift), averaged over three seeds per
λ, the sweep picks λ > 0.

Measured on 2026-12-05 (2-core EPYC, this tiny BERT, one seed per λ): the shift at λ = 0 varied
from 1.0 to 2.6 reward spreads across four sessions and at λ = 10 stayed near 1.1, so one seed
picked λ = 10 three times in four; the seeds' mean is what the test judges. Validation accuracy
did not pick λ = 0 either: on clean held-out pairs λ = 10 scored 0.583 against 0.500 (60 pairs),
and on held-out pairs planted like the training pairs 0.726 and 0.714 against 0.720 and 0.651
(175 pairs): within noise, so no test claims it (docs/evaluation.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crome_ray.config import StorageConfig
from crome_ray.cue import DEFAULT_CUE
from crome_ray.data.config import IngestConfig, PlantConfig, SourceConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.data.planting import run_plant_job
from crome_ray.storage import RunFolder

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def tune(tmp: Path, name: str, train: dict, sweep: dict) -> dict:
    """``crome-ray tune -c`` as a user runs it; the committed sweep's details and trials."""
    config = {"job": "tune", "run_name": name, "train": train, "storage": {"root": str(tmp / "runs")},
              "sweep": {"tie_weights": [0, 1], "scheduler": "grid", "clean_tolerance": None,
                        "max_concurrent_trials": 2, "trial_cpus": 0.1, **sweep}}  # fmt: skip
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "crome-ray"), "tune", "-c", str(tmp / f"{name}.yaml")],
        env={**env, "COLUMNS": "200"}, cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    run = RunFolder.from_uri(str(tmp / "runs" / "tune" / name))
    return {
        **run.manifest()["details"],
        "trials": {t["tie_weight"]: t for t in run.read_table("trials").to_pylist()},
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("robust")
    storage = StorageConfig(root=str(tmp / "runs"))
    samples = REPO / "data/samples/ultrafeedback"
    source = SourceConfig(path=str(samples / "train_1k.jsonl"), format="auto", limit=160)
    pairs = run_ingest(IngestConfig(source=source, storage=storage)).run.uri
    plant = PlantConfig(input=pairs, attribute=DEFAULT_CUE, share=0.5, position="start", control=True,
                        storage=storage)  # fmt: skip
    train = {"model": str(tiny_bert), "finetune": "full", "max_length": 64, "batch_size": 8, "max_steps": 150,
             "log_every": 50, "checkpoint_every": 150, "eval_every": 75, "optim": {"lr": 3e-3},
             "scaling": {"workers": 1, "cpus_per_worker": 0.5}, "eval_limit": 60,
             "train_data": run_plant_job(plant, log=lambda _: None).run.uri,
             "eval_data": str(samples / "eval_200.jsonl"),
             "probe": {"cue": DEFAULT_CUE, "position": "start"}}  # fmt: skip
    config = {"job": "tune", "run_name": "robust", "train": train, "storage": {"root": str(tmp / "runs")},
              "sweep": {"tie_weights": [0, 10], "seeds": [0, 1, 2], "scheduler": "grid",
                        "metric": "eval_cue_abs_shift", "clean_tolerance": None, "max_concurrent_trials": 2,
                        "trial_cpus": 0.1}}  # fmt: skip
    (tmp / "robust.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "crome-ray"), "tune", "-c", str(tmp / "robust.yaml")],
        env={**env, "COLUMNS": "200"}, cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    run = RunFolder.from_uri(str(tmp / "runs" / "tune" / "robust"))
    return {**run.manifest()["details"], "trials": run.read_table("trials").to_pylist()}


def test_judged_on_the_planted_attributes_shift_over_three_seeds_the_sweep_picks_a_positive_lambda(sweep):
    shifts = {}
    for t in sweep["trials"]:
        assert t["status"] == "completed", t
        shifts.setdefault(t["tie_weight"], []).append(t["metric"])
    assert sweep["best"]["tie_weight"] == 10.0, shifts
    mean = {lam: sum(v) / len(v) for lam, v in shifts.items()}
    assert mean[10.0] < mean[0.0], shifts  # the attribute moves the λ = 10 models' rewards less
    assert sweep["mode"] == "min"  # the metric's own mode, not given in the config
