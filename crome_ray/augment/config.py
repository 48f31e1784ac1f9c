"""The augmentation job's config: `crome-ray augment` / jobs/augment.py, preference pairs → the
Crome training set: what the oracle is asked for (``AugmentTasks``), the code checks on each
rewrite, the leakage limits, the verifier's control probes, how IQN picks another request,
the baseline filter, the oracle and its fallback, and the Ray Data actors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from crome_ray.config import Frozen, RunName, StorageConfig, config_fingerprint
from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK
from crome_ray.models import builtin_params_b
from crome_ray.oracle.config import FallbackConfig, OracleConfig, answers_only


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
    shrink_slack_chars: int = Field(
        20,
        ge=0,
        description="Characters a rewrite may fall below min_length_ratio × its source (a short source "
        "may lose a word or two).",
    )
    grow_slack_chars: int = Field(
        200,
        ge=0,
        description="Characters a rewrite may run past max_length_ratio × its source (a one-word answer "
        "may grow into a sentence).",
    )
    max_placeholder_words: int = Field(
        2,
        ge=0,
        description="Reject a rewrite of this many words or fewer where its source (for CAN, or A) is a "
        "sentence or more (0: off).",
    )
    sentence_words: int = Field(5, ge=1, description="Words that make a text a sentence or more.")
    max_echo_share: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="Reject a rewrite when this share of its content words or more are the task's own "
        "(instruction words, words about rewriting) and not the request's or the answers'. Unset: off.",
    )
    max_repetition_gain: float | None = Field(
        0.25,
        gt=0,
        le=1,
        description="Reject a rewrite whose share of repeated word 4-grams exceeds its source's by this "
        "much or more (a small model looping: one sentence written over and over). Unset: off.",
    )
    min_neutral_similarity: float | None = Field(
        0.4,
        ge=-1,
        le=1,
        description="CAN and PARA: reject a rewrite whose MiniLM cosine to A is below this (it does not "
        "say what A says). 0.4 keeps 78% of other answers to the same request and 0.3% of answers to "
        "other requests (bench/neutral_thresholds.py). Unset: off.",
    )
    min_neutral_overlap: float | None = Field(
        0.2,
        ge=0,
        le=1,
        description="The same with the unigram F1 to A, where no embedder runs (leakage_embeddings off). "
        "Unset: off.",
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
    verify: bool = Field(
        True,
        description="A verifier call for each causal rewrite that passed the code checks (the switch "
        "for every verification).",
    )
    verify_neutrals: bool | None = Field(
        None,
        description="A verifier call for each CAN and PARA rewrite that passed the code checks: the same "
        "content and quality as A? Unset (auto): on, unless the oracle that serves the run is a built-in "
        "local model under 1B parameters, whose verdicts are noise (docs/local_models.md).",
    )
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
    off = dict.fromkeys(("causal", "elements", "verify", "verify_neutrals", "can", "para"), False)
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


class QualityGate(Frozen):
    """The quality gate per oracle-written kind (``augment.gate``): a kind whose rewrites mostly
    failed, or whose verifier passed its control probes, is left out of ``pairs``, never silently."""

    min_accepted_share: float | None = Field(
        0.25,
        ge=0,
        le=1,
        description="Leave a kind out when fewer than this share of the rewrites the oracle answered "
        "became pairs (the checks, the verifier and the leakage limits refused the rest). Unset: off.",
    )
    min_answered: int = Field(
        20,
        ge=1,
        description="Rewrites of a kind the oracle must have answered before its share is judged (fewer: "
        "too few to tell; the kind is kept, and the closing table says so).",
    )
    max_false_pass_rate: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Leave out the kinds a verifier judged when it passed more than this share of its "
        "control probes (at least 2 judged). Unset: off (controls.max_false_pass_rate still stops a run).",
    )
    on_fail: Literal["leave_out", "stop"] = Field(
        "leave_out",
        description="A kind under a floor: leave_out (its pairs go to the left_out table; the rest of "
        "the run commits) or stop (the run stops before it commits).",
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
    """docs/method.md step 5: keep an augmented pair where a baseline RM is uncertain or wrong."""

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
    gate: QualityGate = QualityGate()
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

    def run_tasks(self) -> AugmentTasks:
        """The tasks as the run does them: ``verify_neutrals`` resolved (see ``AugmentTasks``)."""
        t = self.tasks
        if t.verify_neutrals is not None:
            return t
        serving = self.fallback.oracle if self.fallback.policy == "local_only" else self.oracle
        params = builtin_params_b(serving.model) if serving.local else None
        return t.model_copy(update={"verify_neutrals": params is None or params >= 1.0})

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
