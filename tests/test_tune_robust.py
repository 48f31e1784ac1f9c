"""λ chosen for robustness, as a user runs the sweep (`crome-ray tune -c YAML`, a local Ray of its
own): the training pairs carry a planted attribute on half of their chosen answers and its exact
neutral ties (the self-check's positive-control data).

- Judged on the robustness probe (the size of the attribute's reward shift when it is planted on
  each clean held-out pair's rejected answer), averaged over three seeds per λ, the sweep picks
  λ > 0.
- Judged on an in-distribution metric (BT loss on held-out pairs that carry the attribute on
  their chosen answer, as the planted training pairs do), it picks λ = 0: the shortcut pays there.
  Measured 2026-12-05 (2-core EPYC, 3 seeds, 175 pairs): λ = 0 0.081/0.090/0.175 against
  λ = 10 0.525/0.528/0.441.

What no test claims: on *clean* held-out pairs the clean metric prefers neither. Accuracy there
was 0.533/0.550/0.567 (λ = 0) against 0.533/0.550/0.583 (λ = 10) over three seeds (60 pairs), and
with the attribute on half of the held-out chosen answers BT loss was 0.559/0.618/0.676 against
0.616/0.632/0.691: within seed noise (docs/evaluation.md)."""

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
SAMPLES = REPO / "data/samples/ultrafeedback"

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.long]  # make test-long


def tune(tmp: Path, name: str, train: dict, sweep: dict) -> dict:
    """``crome-ray tune -c`` as a user runs it; the committed sweep's details and trials."""
    config = {"job": "tune", "run_name": name, "train": train, "storage": {"root": str(tmp / "runs")},
              "sweep": {"scheduler": "grid", "clean_tolerance": None, "max_concurrent_trials": 2,
                        "trial_cpus": 0.1, **sweep}}  # fmt: skip
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "crome-ray"), "tune", "-c", str(tmp / f"{name}.yaml")],
        env={**env, "COLUMNS": "200"}, cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    run = RunFolder.from_uri(str(tmp / "runs" / "tune" / name))
    return {**run.manifest()["details"], "trials": run.read_table("trials").to_pylist()}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_bert) -> dict:
    """160 training pairs, the attribute on half their chosen answers with its exact ties (the
    control's data), and the training every trial runs (a 2-layer BERT, 150 steps)."""
    tmp = tmp_path_factory.mktemp("robust")
    storage = StorageConfig(root=str(tmp / "runs"))
    source = SourceConfig(path=str(SAMPLES / "train_1k.jsonl"), format="auto", limit=160)
    pairs = run_ingest(IngestConfig(source=source, storage=storage)).run.uri
    plant = PlantConfig(input=pairs, attribute=DEFAULT_CUE, share=0.5, position="start", control=True,
                        storage=storage)  # fmt: skip
    train = {"model": str(tiny_bert), "finetune": "full", "max_length": 64, "batch_size": 8, "max_steps": 150,
             "log_every": 50, "checkpoint_every": 150, "eval_every": 75, "optim": {"lr": 3e-3},
             "scaling": {"workers": 1, "cpus_per_worker": 0.5},
             "train_data": run_plant_job(plant, log=lambda _: None).run.uri}  # fmt: skip
    return {"tmp": tmp, "storage": storage, "train": train}


@pytest.fixture(scope="module")
def sweep(planted):
    """Validation: 60 clean held-out pairs, each also with the attribute on its rejected answer."""
    train = {**planted["train"], "eval_limit": 60, "eval_data": str(SAMPLES / "eval_200.jsonl"),
             "probe": {"cue": DEFAULT_CUE, "position": "start"}}  # fmt: skip
    return tune(planted["tmp"], "robust", train, {"tie_weights": [0, 10], "seeds": [0, 1, 2],
                                                  "metric": "eval_cue_abs_shift"})  # fmt: skip


@pytest.fixture(scope="module")
def in_distribution(planted):
    """Validation pairs like the training pairs where it counts: held-out pairs with the attribute
    on every chosen answer, so it predicts the label there too; judged on their BT loss."""
    source = SourceConfig(path=str(SAMPLES / "eval_200.jsonl"), format="auto")
    ingested = run_ingest(IngestConfig(source=source, storage=planted["storage"])).run.uri
    plant = PlantConfig(input=ingested, attribute=DEFAULT_CUE, share=1.0, position="start", control=False,
                        storage=planted["storage"])  # fmt: skip
    held_out = run_plant_job(plant, log=lambda _: None).run.uri
    train = {**planted["train"], "eval_limit": 100, "eval_data": held_out}
    return tune(planted["tmp"], "in-distribution", train, {"tie_weights": [0, 10], "seeds": [0, 1],
                                                           "metric": "eval_loss_bt"})  # fmt: skip


def test_judged_on_the_planted_attributes_shift_over_three_seeds_the_sweep_picks_a_positive_lambda(sweep):
    shifts = {}
    for t in sweep["trials"]:
        assert t["status"] == "completed", t
        shifts.setdefault(t["tie_weight"], []).append(t["metric"])
    assert sweep["best"]["tie_weight"] == 10.0, shifts
    mean = {lam: sum(v) / len(v) for lam, v in shifts.items()}
    assert mean[10.0] < mean[0.0], shifts  # the attribute moves the λ = 10 models' rewards less
    assert sweep["mode"] == "min"  # the metric's own mode, not given in the config


def test_judged_on_validation_where_the_attribute_predicts_the_label_the_sweep_picks_lambda_zero(
    in_distribution,
):
    """The shortcut pays on such pairs: the baseline's BT loss there is the lowest, so a sweep on
    an in-distribution metric keeps the model that learned the attribute."""
    losses = {}
    for t in in_distribution["trials"]:
        assert t["status"] == "completed", t
        losses.setdefault(t["tie_weight"], []).append(t["metric"])
    assert in_distribution["mode"] == "min"  # a loss: the metric's own mode
    assert in_distribution["best"]["tie_weight"] == 0.0, losses
    assert max(losses[0.0]) < min(losses[10.0]), losses  # every seed, not only the mean
