"""The ingest job's config, and the data sets shipped with the project (``data/samples/``).

``SourceConfig`` describes one input data set (a file, folder or glob; local, s3://, gs://
or hf://) and how its rows become pairs; ``IngestConfig`` is `crome-ray ingest` /
jobs/ingest.py. Every job that reads pairs takes a ``SourceConfig`` or a run folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crome_ray.config import Frozen, RunName, StorageConfig, config_fingerprint

SAMPLE_ULTRAFEEDBACK = "data/samples/ultrafeedback/train_1k.jsonl"


SAMPLE_ULTRAFEEDBACK_EVAL = "data/samples/ultrafeedback/eval_200.jsonl"


SAMPLE_LLMBAR = "data/samples/eval/llmbar_natural/dataset.json"


SAMPLE_XSTEST = "data/samples/eval/xstest"


SourceFormat = Literal[
    "auto",
    "ultrafeedback_binarized",
    "ultrafeedback_raw",
    "rewardbench",
    "llmbar",
    "xstest",
    "pairs",
    "rewardbench2",
    "rm_bench",
    "hh_rlhf",
]


class RawBinarizeConfig(Frozen):
    """How raw openbmb/UltraFeedback rows (4 rated completions) become one pair."""

    score: Literal["overall_score", "mean_rating"] = Field(
        "overall_score",
        description="overall_score: the critique score; mean_rating: mean of the four "
        "fine-grained ratings (helpfulness, honesty, instruction following, truthfulness).",
    )
    rejected: Literal["random", "lowest"] = Field(
        "random",
        description="random: a seeded random pick among the lower-scored completions "
        "(the HuggingFaceH4 rule); lowest: the lowest-scored one.",
    )
    seed: int = 42


class SourceConfig(Frozen):
    """One input data set."""

    path: str = Field(
        SAMPLE_ULTRAFEEDBACK,
        description="File, folder or glob; local, s3://, gs://, or hf://datasets/<org>/<name>/...",
    )
    format: SourceFormat = "ultrafeedback_binarized"
    name: str | None = Field(
        None, description="Data-set name written into each row's `source`; default from format."
    )
    subset: str | None = Field(
        None, description="Subset label for every row (e.g. llmbar-natural); default per format."
    )
    limit: int | None = Field(None, gt=0, description="Stop after this many pairs are written.")
    max_text_chars: int = Field(
        100_000, gt=0, description="Rows with a longer prompt or answer go to quarantine."
    )
    ties: Literal["drop", "keep"] = Field(
        "drop",
        description="Rows whose chosen and rejected scores are equal: drop them (counted) or "
        "keep them as tie-labelled pairs.",
    )
    binarize: RawBinarizeConfig = RawBinarizeConfig()


class IngestConfig(Frozen):
    """`crome-ray ingest` / jobs/ingest.py: one source into a committed pairs table."""

    job: Literal["ingest"] = "ingest"
    run_name: RunName = Field(
        None, description="Run folder name; default <source name>-<config fingerprint>."
    )
    source: SourceConfig = SourceConfig()
    storage: StorageConfig = StorageConfig()
    rows_per_file: int = Field(50_000, gt=0, description="Rows per Parquet part file.")

    def fingerprint(self) -> str:
        """Hash of what determines the output (not where it is written)."""
        return config_fingerprint(self.source)


class PlantConfig(Frozen):
    """The self-check's planted data (`crome_ray.data.plant`): ``attribute`` on the chosen answer of
    ``share`` of the pairs of ``input``; with ``control``, also each planted answer with and
    without it as a tie (the positive control's exact neutrals)."""

    job: Literal["plant"] = "plant"
    run_name: RunName = Field(None, description="Run folder name; default planted-<fingerprint>.")
    input: str = Field(description="Pairs: a committed ingest run folder, or a source file (ingested first).")
    attribute: str = Field(min_length=1, description="The text planted (the spurious attribute).")
    share: float = Field(0.5, gt=0, le=1, description="Share of the preference pairs that get it.")
    position: Literal["start", "end"] = Field("start", description="Before or after the answer.")
    seed: int = Field(0, description="Which pairs get it: a hash of each pair's id and this.")
    control: bool = Field(False, description="Also write the exact ties (the positive control's data).")
    storage: StorageConfig = StorageConfig()
    rows_per_file: int = Field(50_000, gt=0, description="Rows per Parquet part file.")

    def fingerprint(self) -> str:
        return config_fingerprint(self.model_copy(update={"run_name": None, "storage": StorageConfig()}))
