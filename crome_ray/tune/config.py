"""The λ sweep's config: `crome-ray tune` / jobs/tune.py, Ray Tune over the tie-loss weight ×
seeds, each trial a training run, ASHA on the validation metric.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from crome_ray.config import Frozen, RunName, StorageConfig, config_fingerprint
from crome_ray.train.config import TrainConfig

# the robustness probe's metrics (they need train.probe.cue), and the mode each is judged in
ROBUST_METRICS = {"eval_cue_accuracy": "max", "eval_cue_abs_shift": "min", "eval_cue_shift": "min"}
# every metric a sweep may be judged on, with the direction that is better (a loss is made small)
METRIC_MODES = {"eval_accuracy": "max", "eval_loss_bt": "min", "eval_loss_tie": "min",
                "eval_tie_abs_delta": "min", **ROBUST_METRICS}  # fmt: skip


class SweepSettings(Frozen):
    """The λ sweep: a grid of tie-loss weights × seeds, ASHA on the validation metric."""

    tie_weights: list[Annotated[float, Field(ge=0)]] = Field(
        [0.0, 0.1, 0.3, 1.0, 3.0],
        min_length=1,
        description="λ values, in the order the trials start (ASHA judges a trial only against those "
        "before it: put the value you expect to be good first, e.g. [1, 0, 3, 0.1, 0.3]).",
    )
    seeds: list[int] = Field([0], min_length=1, description="Training seeds per λ.")
    metric: str = Field(
        "eval_accuracy",
        description="What a trial is judged on: a metric the training reports at its evaluations "
        "(eval_accuracy, eval_loss_bt; eval_tie_abs_delta when the validation set has ties).",
    )
    mode: Literal["max", "min"] = Field(
        "max",
        description="max or min; unset: the metric's own (a loss and a shift: min; an accuracy: max).",
    )
    clean_tolerance: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Choose only among trials whose final eval_accuracy is within this of the best "
        "trial's: a robustness metric (eval_cue_accuracy) must not be bought with clean accuracy. Unset: "
        "every completed trial.",
    )
    scheduler: Literal["asha", "grid"] = Field(
        "asha", description="asha: stop trials that trail at a rung; grid: every trial runs to the end."
    )
    grace_period: int = Field(
        1,
        gt=0,
        description="ASHA: evaluations before a trial can be stopped. Put the first rung where the "
        "metric has separated: with several seeds, later than with one (docs/evaluation.md).",
    )
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: the share kept at each rung is 1/this.")
    max_concurrent_trials: int = Field(1, gt=0, description="Trials at once (each runs its own workers).")
    trial_cpus: float = Field(
        0.1, gt=0, description="CPUs of each trial's driver (the workers ask their own)."
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_of_the_metric(cls, data: Any) -> Any:
        """Unset, the mode is the metric's own (a loss or the cue's size is made small)."""
        if isinstance(data, dict) and data.get("mode") is None:
            metric = data.get("metric", cls.model_fields["metric"].default)
            data = {**data, "mode": METRIC_MODES.get(metric, "max")}
        return data


class PipelineSweep(SweepSettings):
    """The pipeline's λ sweep: by default on the robustness probe, since on validation pairs like
    the training pairs the tie loss does not help by design and λ = 0 (the baseline) wins: the
    size of the reward the evaluation's cue adds to a rejected answer (in reward spreads), among
    trials within 0.02 of the best clean accuracy. Not the cue accuracy: where the cue is strong
    every trial scores 0 on it, and a tie goes to the smaller λ."""

    metric: str = Field(
        "eval_cue_abs_shift",
        description="What a trial is judged on; eval_cue_abs_shift (default, min) or eval_cue_accuracy "
        "(max) plant the evaluation's cue on each validation pair's rejected answer (crome.probe).",
    )
    clean_tolerance: float | None = Field(0.02, ge=0, le=1, description=SweepSettings.model_fields[
        "clean_tolerance"].description)  # fmt: skip


class TuneConfig(Frozen):
    """`crome-ray tune` / jobs/tune.py: Ray Tune over λ (the tie-loss weight) × seeds; each trial
    is a training run, the best is named in a committed sweep run."""

    job: Literal["tune"] = "tune"
    run_name: RunName = Field(None, description="Run folder name; default tune-<fingerprint>.")
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="The training each trial runs (its loss.tie_weight and seed are the trial's). "
        "Its storage is the sweep's.",
    )
    sweep: SweepSettings = SweepSettings()
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _probe_for_a_robust_metric(self) -> TuneConfig:
        metric = self.sweep.metric
        if metric in ROBUST_METRICS and self.train.probe.cue is None:
            raise ValueError(
                f"sweep.metric {metric} needs the robustness probe: set train.probe.cue "
                "(a text, or 'default' for the evaluation's cue)"
            )
        if METRIC_MODES.get(metric, self.sweep.mode) != self.sweep.mode:
            raise ValueError(f"sweep.metric {metric} is judged with sweep.mode={METRIC_MODES[metric]}")
        return self

    def fingerprint(self) -> str:
        """What determines the trials: not concurrency, the trial driver's CPUs or the storage."""
        return config_fingerprint(
            self.model_copy(
                update={
                    "run_name": None,
                    "storage": StorageConfig(),
                    "train": self.train.model_copy(update={"storage": StorageConfig(), "run_name": None}),
                    "sweep": self.sweep.model_copy(update={"max_concurrent_trials": 1, "trial_cpus": 0.1}),
                }
            )
        )
