"""The λ sweep's config: `crome-ray tune` / jobs/tune.py, Ray Tune over the tie-loss weight ×
seeds, each trial a training run, ASHA on the validation metric.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crome_ray.config import Frozen, RunName, StorageConfig, config_fingerprint
from crome_ray.train.config import TrainConfig


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
    mode: Literal["max", "min"] = "max"
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
