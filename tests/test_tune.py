"""The λ sweep's pure parts: what each trial trains, which trial is best, the per-λ summary."""

from pathlib import Path

import pytest

from crome_ray.config import ConfigError, load_config
from crome_ray.tune.config import TuneConfig
from crome_ray.tune.job import by_lambda, order_note, pick_best, trial_config, trial_run_name


def trial(lam, seed, status="completed", metric=0.5):
    return {"tie_weight": lam, "seed": seed, "status": status, "metric": metric}


def test_a_trial_trains_the_sweeps_config_at_its_lambda_and_seed_and_reports_at_every_evaluation():
    over = ["train.eval_every=5", "train.log_every=7", "train.checkpoint_every=50", "storage.root=/data/runs",
            "train.storage.root=/elsewhere"]  # fmt: skip
    cfg = load_config(TuneConfig, None, over)
    t = trial_config(cfg, "sw", 0.3, 2, {"train": "/data/runs/ingest/a", "eval": "/data/runs/ingest/b"})
    assert (t.loss.tie_weight, t.seed, t.run_name) == (0.3, 2, "sw-lambda0.3-seed2")
    assert t.log_every == t.eval_every == t.checkpoint_every == 5  # every report carries the metric
    assert t.storage.root == "/data/runs" and (t.train_data, t.eval_data) == (
        "/data/runs/ingest/a",
        "/data/runs/ingest/b",
    )
    assert t.loss.margin == cfg.train.loss.margin and t.model == cfg.train.model  # the rest as given
    assert trial_run_name("sw", 3.0, 0) == "sw-lambda3-seed0"


def test_the_best_trial_is_a_completed_one_and_ties_go_to_the_smaller_lambda():
    trials = [trial(0.0, 0, metric=0.61), trial(1.0, 0, metric=0.64), trial(3.0, 0, "stopped_early", 0.9),
              trial(0.3, 0, metric=0.64), trial(0.1, 0, "failed", None)]  # fmt: skip
    assert pick_best(trials, "max")["tie_weight"] == 0.3
    assert pick_best(trials, "min")["tie_weight"] == 0.0
    assert pick_best([trial(1.0, 0, "stopped_early")], "max") is None
    # the probe's shift of a model whose clean rewards do not vary is NaN: not a perfect score
    assert (
        pick_best([trial(0.0, 0, metric=float("nan")), trial(1.0, 0, metric=1.2)], "min")["tie_weight"] == 1.0
    )


def test_with_several_seeds_lambda_is_judged_on_its_mean_and_its_best_seed_is_the_model():
    # λ = 0: one lucky seed; λ = 3: one seed completed
    trials = [trial(0.0, 0, metric=0.70), trial(0.0, 1, metric=0.40), trial(0.0, 2, metric=0.42),
              trial(1.0, 0, metric=0.60), trial(1.0, 1, metric=0.58), trial(1.0, 2, metric=0.62),
              trial(3.0, 0, metric=0.99), trial(3.0, 1, "stopped_early", 0.1)]  # fmt: skip
    best = pick_best(trials, "max")
    assert (best["tie_weight"], best["seed"]) == (3.0, 0)  # its only completed seed
    best = pick_best(trials[:6], "max")
    assert (best["tie_weight"], best["seed"]) == (1.0, 2)  # mean 0.60 against 0.51
    best = pick_best(trials[:6], "min")
    assert (best["tie_weight"], best["seed"]) == (0.0, 1)


def test_a_robustness_metric_is_chosen_only_among_trials_near_the_best_clean_accuracy():
    def t(lam, cue_acc, clean):
        return {**trial(lam, 0, metric=cue_acc), "clean_accuracy": clean}

    # λ = 3 resists the cue best but lost clean accuracy; λ = 1 is within 0.02 of the best clean
    trials = [t(0.0, 0.20, 0.62), t(1.0, 0.55, 0.61), t(3.0, 0.70, 0.50)]
    assert pick_best(trials, "max")["tie_weight"] == 3.0
    assert pick_best(trials, "max", clean_tolerance=0.02)["tie_weight"] == 1.0
    # judged on these trials' clean accuracy alone, λ = 0 wins
    clean = [{**x, "metric": x["clean_accuracy"]} for x in trials]
    assert pick_best(clean, "max", clean_tolerance=0.02)["tie_weight"] == 0.0


def test_a_robustness_metric_needs_the_probe_and_the_pipeline_sweep_sets_it():
    from crome_ray.pipeline.config import PipelineConfig
    from crome_ray.pipeline.job import tune_config

    with pytest.raises(ConfigError, match=r"train\.probe\.cue"):
        load_config(TuneConfig, None, ["sweep.metric=eval_cue_accuracy"])
    assert load_config(TuneConfig, None, ["sweep.metric=eval_cue_accuracy", "train.probe.cue=default"])
    with pytest.raises(ConfigError, match=r"sweep\.mode=min"):  # the cue's size is to be made small
        load_config(
            TuneConfig, None, ["sweep.metric=eval_cue_abs_shift", "sweep.mode=max", "train.probe.cue=default"]
        )
    unset = load_config(TuneConfig, None, ["sweep.metric=eval_cue_abs_shift", "train.probe.cue=default"])
    assert unset.sweep.mode == "min"  # the metric's own mode when none is given
    # a loss is made small: judged "max", a sweep on eval_loss_bt would keep its worst model
    assert load_config(TuneConfig, None, ["sweep.metric=eval_loss_bt"]).sweep.mode == "min"
    assert load_config(TuneConfig, None, ["sweep.metric=eval_accuracy"]).sweep.mode == "max"
    with pytest.raises(ConfigError, match=r"sweep\.mode=min"):
        load_config(TuneConfig, None, ["sweep.metric=eval_loss_bt", "sweep.mode=max"])
    cfg = load_config(PipelineConfig, None, ["sweep.tie_weights=[0, 1]"])
    assert (cfg.sweep.metric, cfg.sweep.mode, cfg.sweep.clean_tolerance) == (
        "eval_cue_abs_shift",
        "min",
        0.02,
    )
    cued = load_config(PipelineConfig, None, ["sweep.tie_weights=[0, 1]", "sweep.metric=eval_cue_accuracy"])
    assert cued.sweep.mode == "max"
    tcfg = tune_config(cfg, "/runs/augment/a")
    assert tcfg.train.probe.cue == cfg.evaluate.cue.text and tcfg.train.probe.position == "auto"
    # the probe is off by default, and then a training run's identity is what it was without it
    plain = load_config(PipelineConfig, None, []).crome
    assert (
        plain.probe.cue is None
        and plain.fingerprint()
        != tcfg.train.model_copy(
            update={"train_data": plain.train_data, "storage": plain.storage}
        ).fingerprint()
    )


def test_per_lambda_the_mean_over_completed_seeds_and_the_count_stopped():
    out = by_lambda(
        [trial(1.0, 0, metric=0.6), trial(1.0, 1, metric=0.7), trial(1.0, 2, "stopped_early", 0.1)]
    )
    assert out[1.0]["metrics"] == [0.6, 0.7] and out[1.0]["mean"] == pytest.approx(0.65)
    assert out[1.0]["stopped_early"] == 1 and out[1.0]["failed"] == 0


def test_a_negative_lambda_or_an_empty_grid_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"sweep\.tie_weights"):
        load_config(TuneConfig, None, ["sweep.tie_weights=[1, -0.5]"])
    with pytest.raises(ConfigError, match=r"sweep\.seeds"):
        load_config(TuneConfig, None, ["sweep.seeds=[]"])
    assert TuneConfig().sweep.tie_weights == [0.0, 0.1, 0.3, 1.0, 3.0]  # the default grid


def test_asha_without_rays_state_api_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """No cluster here, so no state API: a sweep whose stopped trials would leak their CPUs is refused."""
    from crome_ray.tune.job import SweepError, run_tune_job

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config(TuneConfig, None, [f"storage.root={tmp_path}"])
    with pytest.raises(SweepError, match=r"state API is not reachable.*sweep\.scheduler=grid"):
        run_tune_job(cfg)
    assert list(tmp_path.iterdir()) == []  # nothing ingested, nothing written


def asha_stops(order: list[float], grace_period: int = 1, reduction_factor: float = 2.0,
               evaluations: int = 4) -> list[float]:  # fmt: skip
    """Ray's ASHA, set as the sweep sets it, fed trials in ``order``, one at a time, on a metric
    that rises with λ: the λ values it stops."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="t", metric="m", mode="max", max_t=evaluations, grace_period=grace_period,
                         reduction_factor=reduction_factor, stop_last_trials=False)  # fmt: skip
    stopped = []
    for lam in order:
        trial = SimpleNamespace(trial_id=f"{lam:g}", config={})
        asha.on_trial_add(None, trial)
        for t in range(1, evaluations + 1):
            if asha.on_trial_result(None, trial, {"t": t, "m": lam * t}) == ASHAScheduler.STOP:
                stopped.append(lam)
                break
    return stopped


def test_asha_stops_nothing_in_ascending_lambda_and_the_shipped_order_lets_it_stop_most():
    """Why the order of ``tie_weights`` matters (docs/evaluation.md): ASHA judges a trial only
    against those that reached the rung before it. The shipped cluster sweep's rungs (its
    grace period and reduction factor; 8 evaluations, its one epoch at an evaluation every 50
    steps being of that order), one seed and one trial at a time."""
    import yaml

    assert asha_stops([0.0, 0.1, 0.3, 1.0, 3.0]) == []
    s = yaml.safe_load((Path(__file__).parents[1] / "jobs/configs/tune.yaml").read_text())["sweep"]
    rungs = {"grace_period": s["grace_period"], "reduction_factor": s["reduction_factor"], "evaluations": 8}
    assert sorted(s["tie_weights"]) == [0.0, 0.1, 0.3, 1.0, 3.0]
    assert asha_stops(sorted(s["tie_weights"]), **rungs) == []
    assert asha_stops(s["tie_weights"], **rungs) == [0.0, 0.1, 0.3]


def test_an_asha_sweep_in_ascending_lambda_gets_a_note_and_other_orders_do_not():
    from crome_ray.tune.config import SweepSettings

    assert "ascending" in order_note(SweepSettings())  # the default grid: 0, 0.1, 0.3, 1, 3
    assert order_note(SweepSettings(tie_weights=[1, 0, 3, 0.1, 0.3])) is None
    assert order_note(SweepSettings(scheduler="grid")) is None  # every trial runs to the end anyway
    assert order_note(SweepSettings(tie_weights=[0, 1])) is None
