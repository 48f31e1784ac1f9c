"""The training job's config: `crome-ray train` / jobs/train.py, a reward model on preference
(and tie) pairs on Ray Train: the base model, LoRA or full fine-tuning, the composite loss
(Bradley–Terry plus λ × the tie loss), the optimizer and the workers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crome_ray.config import Frozen, RunName, StorageConfig, config_fingerprint, digest
from crome_ray.cue import DEFAULT_CUE
from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK, SAMPLE_ULTRAFEEDBACK_EVAL


class LoraSettings(Frozen):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = Field(
        None, description="Module names to adapt; unset: the attention projections of the architecture."
    )


class LossSettings(Frozen):
    tie_weight: float = Field(1.0, ge=0, description="λ, the weight of the tie loss on neutral pairs.")
    margin: float = Field(0.0, description="Bradley–Terry margin m in −log σ(Δ − m).")
    center_coefficient: float = Field(0.0, ge=0, description="Weight of mean((r_a + r_b)^2).")


class OptimSettings(Frozen):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = Field(1.0, gt=0)


class ScalingSettings(Frozen):
    workers: int = Field(2, gt=0, description="Training workers (one per GPU on a GPU cluster).")
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.9, gt=0, description="CPUs per worker (fractional on a laptop).")
    placement: Literal["pack", "spread"] = Field(
        "pack",
        description="pack: the workers on as few nodes as fit them (the fastest gradient exchange). "
        "spread: on as many nodes as possible, so a node that dies takes fewer of them with it; a "
        "restart after a node loss may then pack them onto the nodes left (Ray's SPREAD is soft).",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: a full copy of the model per worker. fsdp: weights, gradients and optimizer "
        "state sharded across workers (FSDP2), for models that do not fit one device.",
    )


class RobustnessProbe(Frozen):
    """A robustness metric at each evaluation: a cue planted on the rejected answer of every
    validation pair. A model that learned the cue (a spurious attribute) scores those pairs
    below its clean accuracy, and the cue moves its reward. The λ sweep can choose on it."""

    cue: str | None = Field(
        None,
        description="The text planted on each validation pair's rejected answer; 'default': the "
        "evaluation's planted cue. Unset: no probe. Adds eval_cue_accuracy (accuracy with the cue on the "
        "rejected answer), eval_cue_shift (the reward the cue adds to a rejected answer, in the spread "
        "of the clean answers' rewards) and eval_cue_abs_shift (its size, for a sweep to minimise).",
    )
    position: Literal["auto", "start", "end"] = Field(
        "auto",
        description="Where the cue goes. auto: where truncation to max_length keeps it, the end for a "
        "decoder (its tokens are cut from the start) and the start for an encoder (cut from the end).",
    )

    @property
    def text(self) -> str | None:
        return DEFAULT_CUE if self.cue == "default" else self.cue


class TrainConfig(Frozen):
    """`crome-ray train` / jobs/train.py: a reward model on preference (and tie) pairs, on Ray Train."""

    job: Literal["train"] = "train"
    run_name: RunName = Field(None, description="Run folder name; default rm-<fingerprint>.")
    model: str = Field("smollm2", description="Base: built-in name, HF id, local, s3:// or gs:// folder.")
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraSettings = LoraSettings()
    loss: LossSettings = LossSettings()
    optim: OptimSettings = OptimSettings()
    scaling: ScalingSettings = ScalingSettings()
    train_data: str = Field(
        SAMPLE_ULTRAFEEDBACK,
        description="Pairs: a committed ingest/augment run folder, or a source file (ingested first).",
    )
    eval_data: str | None = Field(SAMPLE_ULTRAFEEDBACK_EVAL, description="Held-out pairs, same forms.")
    train_limit: int | None = Field(None, gt=0, description="Use only the first N training pairs.")
    eval_limit: int | None = Field(None, gt=0)
    shuffle_labels: bool = Field(
        False, description="Control run: swap chosen and rejected of a random half of the training pairs."
    )
    max_length: int = Field(512, ge=16, description="Tokens per (prompt, response); longer is truncated.")
    batch_size: int = Field(8, gt=0, description="Pairs per worker per step.")
    grad_accum: int = Field(1, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; unset: from epochs.")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU.")
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(100, gt=0, description="Steps between checkpoints.")
    eval_every: int | None = Field(None, gt=0, description="Steps between evaluations; unset: at the end.")
    log_every: int = Field(10, gt=0)
    max_failures: int = Field(3, ge=-1, description="Worker failures to recover from (-1: any).")
    export_merged: bool = Field(True, description="Also save the LoRA-merged model (plain transformers).")
    probe: RobustnessProbe = RobustnessProbe()
    storage: StorageConfig = StorageConfig()

    def fingerprint(self) -> str:
        """The run's identity; the probe only when it is on (off, the fingerprint is what it was
        before the probe existed)."""
        same = self.model_copy(update={"run_name": None, "storage": StorageConfig()})
        if self.probe.cue is None:
            return digest([same.model_dump(mode="json", exclude={"probe"})])
        return config_fingerprint(same)
