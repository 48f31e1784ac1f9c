"""The pipeline's config: `crome-ray pipeline` / jobs/pipeline.py, the method end to end, each
step's own config nested under its name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crome_ray.augment.config import AugmentConfig
from crome_ray.config import Frozen, RunName, Seeds, StorageConfig, config_fingerprint, digest
from crome_ray.cue import DEFAULT_CUE
from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK, SourceConfig
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.train.config import TrainConfig
from crome_ray.tune.config import PipelineSweep

PIPELINE_MODELS = ("baseline", "crome")
CONTROL = "control"  # the self-check's positive control, in evaluate.models


class SelfCheck(Frozen):
    """The planted-attribute self-check: can this run (data, model, oracle, loss) keep a reward
    model from rewarding an attribute that predicts the label but says nothing of quality?

    The attribute is planted on the chosen answer of ``share`` of the training pairs, so the
    baseline learns to reward it; the evaluation plants it on held-out pairs' rejected answers
    (its cue probe), where a model that learned it errs. Three RMs on the same planted pairs: the
    baseline, Crome as configured (the oracle's augmentation), and the positive control: the
    Crome trainer and λ on the planted pairs plus exact neutral ties (each planted answer with and
    without the attribute). The control says whether the trainer and loss can remove the
    attribute here; the gap between it and Crome says how much of that the oracle's data delivers.
    """

    attribute: str = Field(
        DEFAULT_CUE, min_length=1, description="The planted text: says nothing of the answer's quality."
    )
    share: float = Field(0.5, gt=0, le=1, description="Share of the training preference pairs planted.")
    position: Literal["auto", "start", "end"] = Field(
        "auto",
        description="Before or after the answer. auto: where the RMs' truncation keeps it (the start for "
        "an encoder, the end for a decoder).",
    )
    seed: int = Field(0, description="Which pairs are planted: a hash of each pair's id and this.")


class PipelineConfig(Frozen):
    """`crome-ray pipeline` / jobs/pipeline.py: the method end to end, each step a committed run.

    ingest → baseline RM → augment (its filter scores with the baseline) → Crome RM (or the λ
    sweep's best) → evaluation of both side by side. The pipeline sets what links the steps
    (each step's input is the run before it, every step writes under ``storage``); everything
    else is each step's own config, overridable as ``augment.limit=...``, ``crome.max_steps=...``.
    """

    job: Literal["pipeline"] = "pipeline"
    run_name: RunName = Field(None, description="The pipeline's own run; default pipeline-<fingerprint>.")
    source: SourceConfig = Field(
        default_factory=lambda: SourceConfig(path=SAMPLE_ULTRAFEEDBACK, format="auto"),
        description="The training preference pairs (any ingest format, local, s3:// or gs://).",
    )
    baseline: TrainConfig = Field(
        default_factory=TrainConfig, description="The baseline RM, trained on the source pairs."
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="The augmentation of the source pairs; filter.model is the baseline (unless "
        "baseline_filter is false).",
    )
    baseline_filter: bool = Field(True, description="Filter the augmented pairs with the baseline RM.")
    crome: TrainConfig = Field(
        default_factory=TrainConfig, description="The Crome RM, trained on the augmented pairs."
    )
    sweep: PipelineSweep | None = Field(
        None,
        description="Set: Ray Tune sweeps λ of the Crome RM, and its best trial is the Crome RM. By default "
        "it judges trials by eval_cue_abs_shift (the reward the evaluation's cue adds to each validation "
        "pair's rejected answer), among those within 0.02 of the best clean accuracy.",
    )
    selfcheck: SelfCheck | None = Field(
        None,
        description="Set: the planted-attribute self-check (`crome-ray selfcheck`, the demo): the RMs train "
        "on planted pairs, a positive control joins them, and the evaluation's cue is the attribute.",
    )
    seeds: Seeds = Field(
        None,
        min_length=1,
        description="Train every RM once per seed (the first is the one the augmentation's filter and the "
        "sweep use); the report shows each number across seeds beside the differences between models.",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=lambda: EvaluateConfig(models=list(PIPELINE_MODELS)),
        description="The evaluation; in models, 'baseline' and 'crome' name the pipeline's RMs, any "
        "other entry is evaluated as given (e.g. a public RM for comparison).",
    )
    storage: StorageConfig = StorageConfig()

    def fingerprint(self) -> str:
        """The pipeline's run is named by its steps' configs (each step fingerprints its own); the
        self-check and the seeds only when set (unset, the fingerprint is what it was before they
        existed)."""
        same = self.model_copy(update={"run_name": None, "storage": StorageConfig()})
        off = {k for k in ("selfcheck", "seeds") if getattr(self, k) is None}
        if off:
            return digest([same.model_dump(mode="json", exclude=off)])
        return config_fingerprint(same)
