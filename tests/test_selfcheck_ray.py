"""The self-check as a user runs it (`crome-ray selfcheck -c YAML`, a local Ray of its own), on
the shipped sample: a tiny BERT (150 steps) learns the planted attribute, the positive control
(λ = 10) removes a large share of its reward shift, distinguishable from zero (the trainer and
the tie loss work here; measured on 2026-12-04: 55%, where λ = 4 gave 46% and λ = 30 49%: a
2-layer random BERT balances near half; MiniLM at the demo's sizes, docs/selfcheck.md), and the
same control with the tie loss switched off (λ = 0) fails that test. The second run finds the
ingest, the planting, the baseline and the augmentation committed and redoes only what λ
changes. A third run trains every RM with a second seed too: the verdict is then on the seed
means, and the report sets each number's spread across seeds beside the gaps between models."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crome_ray.cue import DEFAULT_CUE
from crome_ray.storage import RunFolder

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.long]  # make test-long


def rm(model: Path) -> dict:
    return {"model": str(model), "finetune": "full", "max_length": 64, "batch_size": 8, "max_steps": 150,
            "log_every": 50, "checkpoint_every": 150, "eval_data": None, "optim": {"lr": 3e-3},
            "scaling": {"workers": 1, "cpus_per_worker": 0.5}}  # fmt: skip


# the λ sweep of the Crome RM on the planted pairs, judged (the pipeline's default) on the planted
# attribute's shift on 60 clean held-out pairs, among trials near the best clean accuracy
SWEEP = ["sweep.tie_weights=[0, 10]", "sweep.scheduler=grid", "sweep.max_concurrent_trials=2",
         "crome.eval_data=data/samples/ultrafeedback/eval_200.jsonl", "crome.eval_limit=60",
         "crome.eval_every=75"]  # fmt: skip


@pytest.fixture(scope="module")
def selfchecks(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("selfcheck")
    config = {
        "job": "pipeline",
        "run_name": "check",
        "source": {"path": "data/samples/ultrafeedback/train_1k.jsonl", "format": "auto", "limit": 160},
        "selfcheck": {"share": 0.5},
        "baseline": rm(tiny_bert),
        "baseline_filter": False,
        "augment": {"oracle_examples": 0, "iqn": {"cpus": 0.25}},
        "crome": {**rm(tiny_bert), "loss": {"tie_weight": 10.0}},
        "evaluate": {"data": ["data/samples/ultrafeedback/eval_200.jsonl"], "limit": 40,
                     "transformations": [],
                     "best_of_n": {"enabled": False},
                     "scoring": {"workers": 1, "cpus": 1, "batch_size": 32, "max_length": 64}},
        "storage": {"root": str(tmp / "runs")},
    }  # fmt: skip
    (tmp / "selfcheck.yaml").write_text(yaml.safe_dump(config))
    keep = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GEMINI_API_KEY", "GOOGLE_API_KEY")
    }
    env = {**keep, "COLUMNS": "200"}  # the verdict's lines unwrapped
    out = {}
    runs = (("on", "check", []), ("off", "check-off", ["crome.loss.tie_weight=0", "run_name=check-off"]),
            ("seeds", "check-seeds", ["seeds=[0, 1]", "run_name=check-seeds"]),
            ("sweep", "check-sweep", ["run_name=check-sweep", *SWEEP]))  # fmt: skip
    for name, run_name, extra in runs:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "crome-ray"), "selfcheck", "-c", str(tmp / "selfcheck.yaml"),
             *extra],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        run = RunFolder.from_uri(str(tmp / "runs" / "pipeline" / run_name))
        out[name] = {"details": run.manifest()["details"], "stdout": proc.stdout, "stderr": proc.stderr,
                     "log": run.committed().file("console.log")}  # fmt: skip
    return out


NOISE = ("Traceback", "core_worker", "WARNING", "(RayTrainWorker pid=", "PlacementGroupCleaner", "raylet")


def test_the_terminal_shows_crome_rays_lines_with_an_eta_and_the_run_keeps_the_rest(selfchecks):
    run = selfchecks["on"]
    terminal = run["stdout"] + run["stderr"]
    assert not [n for n in NOISE if n in terminal], terminal[-3000:]
    steps = re.findall(r"^step (\d+)/(\d+) .*ETA (\S+)", run["stdout"], re.M)
    assert ("150", "150", "0s") in steps and len(steps) >= 9, steps  # every RM's lines, unprefixed
    assert run["stdout"].rstrip().splitlines()[-1].startswith(f"log: {run['log']} ")
    hidden = Path(run["log"]).read_text()
    assert "(RayTrainWorker pid=" in hidden  # hidden from the terminal, not lost


def test_the_baseline_learns_the_attribute_and_the_control_removes_most_of_it(selfchecks):
    v = selfchecks["on"]["details"]["selfcheck"]
    assert v["learned"], v["lines"]
    assert v["removed_by_control"] > 0.4 and v["control_distinguishable"], v["lines"]
    assert v["position"] == "start"  # an encoder keeps the start of a long answer
    assert "the trainer and loss can remove the attribute here" in selfchecks["on"]["stdout"]


def test_with_the_tie_loss_off_the_control_fails_the_same_test(selfchecks):
    v = selfchecks["off"]["details"]["selfcheck"]
    assert v["learned"], v["lines"]
    assert not (v["removed_by_control"] > 0.4 and v["control_distinguishable"]), v["lines"]


def test_the_second_run_redoes_only_what_lambda_changes(selfchecks):
    steps = {s["name"]: s["done"] for s in selfchecks["off"]["details"]["steps"]}
    assert steps == {"ingest": False, "plant": False, "baseline": False, "augment": False,
                     "crome": True, "control": True, "evaluate": True}  # fmt: skip


def test_with_two_seeds_each_rm_trains_again_on_the_same_data_and_the_verdict_is_on_the_means(selfchecks):
    details = selfchecks["seeds"]["details"]
    steps = {s["name"]: s["done"] for s in details["steps"]}
    assert steps["ingest"] is False and steps["augment"] is False  # seed 0: the first run's, found
    v = details["selfcheck"]
    assert v["lines"][0] == "on the means over training seeds 0, 1:", v["lines"]
    assert v["learned"], v["lines"]
    evaluation = RunFolder.from_uri(next(s["uri"] for s in details["steps"] if s["name"] == "evaluate"))
    manifest = evaluation.manifest()
    seeds = manifest["details"]["seeds"]
    for label in ("baseline", "crome", "control"):
        own = RunFolder.from_uri(details["baseline_model" if label == "baseline" else "crome_model"]
                                 if label != "control" else details["control_model"])  # fmt: skip
        other = RunFolder.from_uri(manifest["inputs"][f"model:{label}@seed1"]["uri"])
        a, b = own.manifest()["config"], other.manifest()["config"]
        assert (a["seed"], b["seed"]) == (0, 1)
        assert {**a, "seed": 1, "run_name": None} == {**b, "run_name": None}  # the same training otherwise
        assert seeds["models"][label]["seeds"] == [0, 1]
        shifts = seeds["models"][label]["metrics"]["cue_shift_in_spread"]["values"]
        assert len(shifts) == 2 and shifts[0] != shifts[1]  # the seed changed the model
    folder = evaluation.committed()
    report = folder.fs.open(folder.file("report.md"), "r").read()
    assert "## Across training seeds" in report and "| control | 0, 1 |" in report
    assert "control: seed to seed" in report


def test_the_pipelines_sweep_on_planted_pairs_picks_lambda_by_the_planted_attributes_shift(selfchecks):
    details = selfchecks["sweep"]["details"]
    sweep = RunFolder.from_uri(next(s["uri"] for s in details["steps"] if s["name"] == "crome"))
    doc = sweep.manifest()
    assert (doc["details"]["metric"], doc["details"]["mode"]) == ("eval_cue_abs_shift", "min")
    probe = doc["config"]["train"]["probe"]
    assert (probe["cue"], probe["position"]) == (DEFAULT_CUE, "start")  # the attribute, where it was planted
    trials = sweep.read_table("trials").to_pylist()
    assert sorted(t["tie_weight"] for t in trials) == [0.0, 10.0]
    assert all(t["status"] == "completed" for t in trials), trials
    shift = {t["tie_weight"]: t["metric"] for t in trials}
    assert shift[0.0] != shift[10.0] and all(v > 0 for v in shift.values()), shift  # it tells them apart
    floor = max(t["clean_accuracy"] for t in trials) - doc["details"]["clean_tolerance"] - 1e-12
    eligible = {t["tie_weight"]: t["metric"] for t in trials if t["clean_accuracy"] >= floor}
    chosen = min(eligible, key=lambda lam: (eligible[lam], lam))  # the smaller shift among eligible λ
    assert doc["details"]["best"]["tie_weight"] == chosen, trials
    control = RunFolder.from_uri(details["control_model"]).manifest()["config"]
    assert control["loss"]["tie_weight"] == chosen  # the control takes the λ the sweep chose
