"""The evaluation job's config: `crome-ray evaluate` / jobs/evaluate.py, reward models on
RewardBench-style pairs and their reWordBench-style transformations, side by side: the data
sets, the categories, the transformations, the planted-cue probe, Best-of-N, the scoring
actors and the oracle-written rewrites (paraphrase, back-translation).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from crome_ray.config import Frozen, RunName, Seeds, StorageConfig, digest
from crome_ray.cue import DEFAULT_CUE
from crome_ray.data.config import SAMPLE_LLMBAR, SAMPLE_ULTRAFEEDBACK_EVAL, SAMPLE_XSTEST, SourceConfig
from crome_ray.evaluate.categories import REWARDBENCH_CATEGORIES
from crome_ray.evaluate.transforms import TRANSFORMATIONS
from crome_ray.oracle.config import FallbackConfig, OracleConfig, answers_only


class CueProbe(Frozen):
    """The planted-cue probe: a text added to answers, to see how far it moves the reward."""

    enabled: bool = True
    text: str = Field(DEFAULT_CUE, min_length=1, description="What is planted (a block, padding, ...).")
    position: Literal["end", "start"] = "end"


class BestOfNSettings(Frozen):
    """Best-of-N: each model picks one of XSTest's five labelled answers per prompt."""

    enabled: bool = True
    path: str = Field(SAMPLE_XSTEST, description="An XSTest folder (prompts and labelled completions).")
    limit: int | None = Field(None, gt=0, description="Only the first N prompts (default: the run's limit).")
    reference_source: str | None = Field(
        "gpt4", description="Also compare each pick with always taking this model's answer."
    )


class ScoringSettings(Frozen):
    """Batched scoring on Ray Data actors, each holding one copy of the model."""

    workers: int = Field(1, gt=0, description="Scoring actors per model.")
    cpus: float = Field(1.0, gt=0, description="CPUs per scoring actor (its torch threads: this, rounded).")
    gpus: float = Field(0.0, ge=0, description="GPUs per scoring actor (1 on a GPU cluster).")
    batch_size: int = Field(32, gt=0, description="Texts per forward pass.")
    max_length: int = Field(512, ge=16, description="Tokens per (prompt, answer); longer is truncated.")
    cache: bool = Field(
        True,
        description="Keep each model's scores under <storage.root>/score-cache, keyed by the model as it "
        "is and the text: a re-run scores only what that model has not scored (evaluate.score_cache).",
    )


REWRITE_NAMES = ("paraphrase", "back_translation")


class RewriteSettings(Frozen):
    """Paraphrase and back-translation: the transformations an LLM writes. Each distinct answer of
    the rewritten pairs is sent through the oracle layer as committed oracle runs (quota, the
    dollar cap, the cache and ledger, the fallback), not through ``evaluate.transforms``."""

    enabled: bool = Field(False, description="Rewrite answers with the oracle (costs oracle calls).")
    transformations: list[Literal["paraphrase", "back_translation"]] = Field(
        default_factory=lambda: list(REWRITE_NAMES),
        min_length=1,
        description="paraphrase (one call per answer); back_translation (two: into pivot_language "
        "and back into English).",
    )
    pivot_language: str = Field(
        "French",
        pattern=r"^[A-Za-z][A-Za-z -]{0,39}$",
        description="The language back-translation goes through (a name: letters, spaces, hyphens).",
    )
    limit: int | None = Field(
        None, gt=0, description="Rewrite the answers of the first N scored pairs of each data set only."
    )
    max_chars: int = Field(
        4000, gt=0, description="Answers longer than this are not sent (their pairs are counted as too_long)."
    )
    oracle: OracleConfig = OracleConfig()
    fallback: FallbackConfig = FallbackConfig()
    no_key: Literal["local", "fail"] = Field(
        "local",
        description="With no key for a remote oracle: local (the local oracle serves every call) or fail.",
    )
    workers: int = Field(2, gt=0, description="Ray Data actors calling the oracle.")
    worker_cpus: float = Field(0.25, gt=0, description="CPUs per oracle actor (the calls are I/O bound).")
    batch_size: int = Field(32, gt=0, description="Requests per actor call; they run concurrently.")
    batches_per_worker: int = Field(2, gt=0, description="Batches an oracle actor works on at once.")

    @field_validator("transformations")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each transformation once: {v}")
        return v

    def answers_only(self) -> RewriteSettings:
        """What decides the rewritten texts (for fingerprints): not quota, cap, endpoint or actors."""
        fb = self.fallback
        return self.model_copy(
            update={
                "oracle": answers_only(self.oracle),
                "fallback": fb.model_copy(update={"oracle": answers_only(fb.oracle)}),
                "no_key": "local",
                "workers": 1,
                "worker_cpus": 1.0,
                "batch_size": 1,
                "batches_per_worker": 1,
            }
        )


class EvaluateConfig(Frozen):
    """`crome-ray evaluate` / jobs/evaluate.py: reward models on RewardBench-style data and its
    reWordBench-style transformations, side by side, into a report."""

    job: Literal["evaluate"] = "evaluate"
    run_name: RunName = Field(None, description="Run folder name; default eval-<fingerprint>.")
    models: list[str] = Field(
        min_length=1,
        description="Reward models: training run folders, model folders, s3:// or gs:// folders or HF ids.",
    )
    labels: list[str] | None = Field(None, description="A short name per model (default: its folder name).")
    data: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(path=SAMPLE_LLMBAR, format="llmbar", subset="llmbar-natural"),
            SourceConfig(path=SAMPLE_XSTEST, format="xstest"),
            SourceConfig(path=SAMPLE_ULTRAFEEDBACK_EVAL, format="auto", name="ultrafeedback"),
        ],
        min_length=1,
        description="Pairs: committed ingest runs, or sources ingested first (a path, format auto; or "
        "path, format, subset as in ingest). A pair's subset is its source's, else the source name.",
    )
    limit: int | None = Field(None, gt=0, description="Score only the first N pairs of each data set.")
    categories: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in REWARDBENCH_CATEGORIES.items()},
        description="Category -> its subsets (default RewardBench's).",
    )
    subset_weights: dict[str, float] = Field(
        default_factory=dict, description="A subset's weight in its category (default: its pair count)."
    )
    upweight_math: bool = Field(True, description="math-prm weighs as much as the code subsets together.")
    transformations: list[str] = Field(
        default_factory=lambda: list(TRANSFORMATIONS),
        description="reWordBench-style transformations to score (default: all).",
    )
    seed: int = Field(0, description="Seeds the transformations' choices and the bootstrap's resamples.")
    seeds: Seeds = Field(
        None,
        min_length=1,
        description="Training seeds: each model that is a committed training run is also trained (or found "
        "trained) with these seeds, the same config otherwise; the report shows each number's mean and "
        "spread across seeds, and the between-seed differences next to the between-model ones.",
    )
    bootstrap_reps: int = Field(
        2000,
        ge=100,
        description="Bootstrap resamples behind each 95% interval and paired difference (over prompts).",
    )
    shift_threshold: float = Field(
        0.25, gt=0, description="A reward shift counts when |shift| > this × the model's reward spread."
    )
    cue: CueProbe = CueProbe()
    best_of_n: BestOfNSettings = BestOfNSettings()
    scoring: ScoringSettings = ScoringSettings()
    rewrites: RewriteSettings = RewriteSettings()
    storage: StorageConfig = StorageConfig()

    @field_validator("data", mode="before")
    @classmethod
    def _paths_are_sources(cls, v: Any) -> Any:
        if isinstance(v, str | dict):
            v = [v]
        return [{"path": x, "format": "auto"} if isinstance(x, str) else x for x in v]

    @field_validator("transformations")
    @classmethod
    def _known_transformations(cls, v: list[str]) -> list[str]:
        known = list(TRANSFORMATIONS)
        bad = [t for t in v if t not in known]
        if bad:
            oracle = [t for t in bad if t in REWRITE_NAMES]
            hint = f" ({', '.join(oracle)}: rewrites.enabled=true, through the oracle)" if oracle else ""
            raise ValueError(f"unknown transformation(s) {bad}; known: {', '.join(known)}{hint}")
        return v

    @model_validator(mode="after")
    def _labels_match(self) -> EvaluateConfig:
        if self.labels is not None and len(self.labels) != len(self.models):
            raise ValueError(f"{len(self.labels)} labels for {len(self.models)} models")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must differ: {self.labels}")
        return self

    def fingerprint(self) -> str:
        """What determines the numbers: not the actors or their resources; the rewrites' oracle
        settings only when they are on, the seeds only when set (either off, the fingerprint is what it
        was before they existed)."""
        same = self.model_copy(
            update={
                "run_name": None,
                "storage": StorageConfig(),
                "scoring": self.scoring.model_copy(
                    update={"workers": 1, "cpus": 1.0, "gpus": 0.0, "cache": True}
                ),
                "rewrites": self.rewrites.answers_only(),
            }
        )
        on = {"rewrites": self.rewrites.enabled, "seeds": self.seeds is not None}
        off = {k for k, v in on.items() if not v}
        return digest([same.model_dump(mode="json", exclude=off or None)])
