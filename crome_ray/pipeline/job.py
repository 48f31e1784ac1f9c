"""The pipeline (Ray composition over the jobs): the Crome method end to end, each step a
committed run, the pipeline itself a run whose inputs are the steps.

    ingest → baseline RM → augment (its filter scores with the baseline) → Crome RM
    (or the λ sweep's best trial) → evaluation of baseline and Crome side by side

With the self-check (``selfcheck``), a planting step follows the ingest and every RM trains on
its planted pairs; a positive control (the Crome trainer on the planted pairs and their exact
ties) joins the evaluation, whose cue is the planted attribute:

    ingest → plant → baseline → augment → Crome → control → evaluation of all three

Every step is the job a user runs on its own (``run_ingest``, ``run_train_job``,
``run_augment_job``, ``run_tune_job``, ``run_evaluate_job``) with the config the pipeline
derives from ``PipelineConfig``: the pipeline sets only what links the steps (each step's
input is the committed run before it; every step writes under the pipeline's storage
root). The steps' runs are named by their configs' fingerprints, which include their
inputs' URIs, so a re-run of the same pipeline finds every step committed and does nothing,
and a changed setting redoes that step and the ones after it, no others.

The pipeline's own run (``<root>/pipeline/<run>/``) records each step's run and whether it
was done or found, the evaluation's headline numbers and where its report is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.data.config import IngestConfig, PlantConfig
from crome_ray.errors import CromeError
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.oracle.choice import OracleChoice, choose_oracle
from crome_ray.pipeline.config import CONTROL, PipelineConfig
from crome_ray.runs import Step, StepResult
from crome_ray.storage import RunFolder
from crome_ray.train.config import TrainConfig
from crome_ray.tune.config import TuneConfig

JOB = "pipeline"
STEPS = ("ingest", "baseline", "augment", "crome", "evaluate")
SELFCHECK_STEPS = ("ingest", "plant", "baseline", "augment", "crome", "control", "evaluate")


def steps_of(cfg: PipelineConfig) -> tuple[str, ...]:
    return SELFCHECK_STEPS if cfg.selfcheck is not None else STEPS


# ---------------------------------------------------------------- pure: each step's config


def run_name(cfg: PipelineConfig) -> str:
    return cfg.run_name or f"pipeline-{cfg.fingerprint()}"


def ingest_config(cfg: PipelineConfig) -> IngestConfig:
    return IngestConfig(source=cfg.source, storage=cfg.storage)


def plant_config(cfg: PipelineConfig, ingest_uri: str, position: str, *, control: bool) -> PlantConfig:
    """The self-check's planted pairs (``control``: with the exact ties), at the resolved position."""
    sc = cfg.selfcheck
    assert sc is not None
    return PlantConfig(
        input=ingest_uri,
        attribute=sc.attribute,
        share=sc.share,
        position=position,  # type: ignore[arg-type]
        seed=sc.seed,
        control=control,
        storage=cfg.storage,
    )


def control_config(cfg: PipelineConfig, control_data_uri: str, tie_weight: float) -> TrainConfig:
    """The positive control: the Crome trainer, at Crome's λ, on the planted pairs and exact ties."""
    c = crome_config(cfg, control_data_uri)
    return c.model_copy(update={"loss": c.loss.model_copy(update={"tie_weight": tie_weight})})


def _first_seed(cfg: PipelineConfig) -> dict[str, int]:
    """With ``seeds``, each RM's own run is at the first (its others: ``train.seeds``)."""
    return {"seed": cfg.seeds[0]} if cfg.seeds else {}


def baseline_config(cfg: PipelineConfig, ingest_uri: str) -> TrainConfig:
    b = cfg.baseline
    return b.model_copy(update={"train_data": ingest_uri, "storage": cfg.storage, **_first_seed(cfg)})


def augment_config(cfg: PipelineConfig, ingest_uri: str, baseline_uri: str | None) -> AugmentConfig:
    a = cfg.augment
    model = baseline_uri if cfg.baseline_filter else None
    return a.model_copy(
        update={
            "input": ingest_uri,
            "storage": cfg.storage,
            "filter": a.filter.model_copy(update={"model": model}),
        }
    )


def crome_config(cfg: PipelineConfig, augment_uri: str) -> TrainConfig:
    c = cfg.crome
    return c.model_copy(update={"train_data": augment_uri, "storage": cfg.storage, **_first_seed(cfg)})


def tune_config(cfg: PipelineConfig, augment_uri: str, position: str = "auto") -> TuneConfig:
    """The sweep of the Crome RM; a robustness metric plants the evaluation's own cue (where the
    model's truncation keeps it: ``probe.position`` auto), or with the self-check its attribute
    where it was planted (``position``), unless the Crome config names a probe."""
    from crome_ray.tune.config import ROBUST_METRICS

    assert cfg.sweep is not None
    train = crome_config(cfg, augment_uri)
    if cfg.sweep.metric in ROBUST_METRICS and train.probe.cue is None:
        cue, at = cfg.evaluate.cue.text, train.probe.position
        if cfg.selfcheck is not None:
            cue, at = cfg.selfcheck.attribute, position
        probe = train.probe.model_copy(update={"cue": cue, "position": at})
        train = train.model_copy(update={"probe": probe})
    return TuneConfig(train=train, sweep=cfg.sweep, storage=cfg.storage)


def evaluate_config(cfg: PipelineConfig, ours: dict[str, str], position: str = "start") -> EvaluateConfig:
    """The evaluation with 'baseline', 'crome' (and the self-check's 'control') in its models
    replaced by the pipeline's RMs (labelled so); other entries stay as given. With the
    self-check, ``position`` is where the attribute was planted."""
    from crome_ray.evaluate.job import model_labels

    e = cfg.evaluate  # labels from the names as written: 'baseline', 'crome', a folder's name
    if cfg.selfcheck is not None:  # the control beside them, the attribute as the cue
        e = e.model_copy(
            update={
                "models": e.models if CONTROL in e.models else [*e.models, CONTROL],
                "cue": e.cue.model_copy(
                    update={"enabled": True, "text": cfg.selfcheck.attribute, "position": position}
                ),
            }
        )
    models = [ours.get(m, m) for m in e.models]
    seeds = {"seeds": cfg.seeds} if cfg.seeds else {}
    return e.model_copy(update={"models": models, "labels": model_labels(e), "storage": cfg.storage, **seeds})


def planted_position(cfg: PipelineConfig) -> str:
    """The self-check's position, ``auto`` resolved where every RM's truncation keeps it."""
    from crome_ray.train.model import cue_position

    assert cfg.selfcheck is not None
    if cfg.selfcheck.position != "auto":
        return cfg.selfcheck.position
    found = {cue_position(m.model, cfg.storage) for m in (cfg.baseline, cfg.crome)}
    if len(found) > 1:
        raise PipelineError(
            "selfcheck.position auto: the baseline and Crome RMs truncate from different ends (an encoder "
            "and a decoder); set selfcheck.position to start or end"
        )
    return found.pop()


# ---------------------------------------------------------------- Ray composition


@dataclass
class StepRecord:
    name: str
    uri: str
    done: bool  # False: found committed, nothing to do
    seconds: float


@dataclass
class PipelineOutcome:
    result: StepResult  # the pipeline's own run
    steps: list[StepRecord] = field(default_factory=list)
    evaluation: StepResult | None = None


class PipelineError(CromeError, RuntimeError):
    """A step of the pipeline failed; the message names the step."""


def choose_oracles(
    cfg: PipelineConfig, environ: Mapping[str, str] | None = None
) -> tuple[PipelineConfig, dict[str, OracleChoice]]:
    """The augmentation's oracle, and the evaluation's rewrites' when they are on: their keys from
    the environment and what to tell the user (``oracle.choice``), before Ray starts."""
    cfg, augment = choose_oracle(cfg, "augment", environ)
    oracles = {"augment": augment}
    if cfg.evaluate.rewrites.enabled:
        cfg, oracles["rewrites"] = choose_oracle(cfg, "evaluate.rewrites", environ)
    return cfg, oracles


def run_pipeline(
    cfg: PipelineConfig,
    oracles: Mapping[str, OracleChoice] | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    step_started: Callable[[str, str], None] = lambda step, what: None,
    step_done: Callable[[str, StepResult], None] = lambda step, result: None,
    augment_progress: Callable[[dict[str, Any]], None] | None = None,
) -> PipelineOutcome:
    """``oracles``: the keys ``choose_oracles`` found for the augmentation and the rewrites (none:
    no keys). ``force`` redoes the pipeline's own run only; to redo a step, change its config."""
    from crome_ray.augment.job import run_augment_job
    from crome_ray.data.ingest import run_ingest
    from crome_ray.data.planting import run_plant_job
    from crome_ray.evaluate.job import run_evaluate_job
    from crome_ray.train.job import run_train_job
    from crome_ray.tune.job import run_tune_job

    augment_oracle = (oracles or {}).get("augment") or OracleChoice(SecretStr(""), SecretStr(""))
    rewrites = (oracles or {}).get("rewrites")  # none: the evaluation says its rewrites need a key
    records: list[StepRecord] = []
    results: dict[str, StepResult] = {}

    several = bool(cfg.seeds and len(cfg.seeds) > 1)
    seeds = f" (seeds {', '.join(map(str, cfg.seeds or []))})" if several else ""

    def other_seeds(uri: str) -> None:
        """The RM at ``uri`` trained with the other seeds too (found when committed)."""
        if several:
            from crome_ray.train.seeds import train_seeds

            train_seeds(uri, cfg.seeds or [], cfg.storage, log)

    def trained(fn: Callable[[], StepResult]) -> Callable[[], StepResult]:
        def run() -> StepResult:
            result = fn()
            other_seeds(result.run.uri)
            return result

        return run

    def step(name: str, what: str, fn: Callable[[], StepResult]) -> StepResult:
        what += seeds if name in ("baseline", "crome", CONTROL) else ""
        step_started(name, what)
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as e:
            raise PipelineError(f"step {name} failed: {e}") from e
        records.append(StepRecord(name, result.run.uri, not result.skipped, round(time.monotonic() - t0, 1)))
        results[name] = result
        step_done(name, result)
        return result

    ingest = step("ingest", f"ingest {cfg.source.path}", lambda: run_ingest(ingest_config(cfg)))
    pairs_uri, position = ingest.run.uri, "auto"
    if cfg.selfcheck is not None:
        position = planted_position(cfg)
        pcfg = plant_config(cfg, ingest.run.uri, position, control=False)
        share = f"{cfg.selfcheck.share:.0%}"
        plant = step(
            "plant",
            f"the attribute on {share} of the chosen answers, at the {position}",
            lambda: run_plant_job(pcfg, log=log),
        )
        pairs_uri = plant.run.uri
    base_cfg = baseline_config(cfg, pairs_uri)
    baseline = step(
        "baseline",
        f"the baseline RM on the {'planted' if cfg.selfcheck else 'source'} pairs",
        trained(lambda: run_train_job(base_cfg, log=log)),
    )
    aug_cfg = augment_config(cfg, pairs_uri, baseline.run.uri)
    augment = step(
        "augment",
        "the Crome augmentation" + (", filtered by the baseline RM" if cfg.baseline_filter else ""),
        lambda: run_augment_job(
            aug_cfg,
            augment_oracle.api_key,
            fallback_key=augment_oracle.fallback_key,
            progress=augment_progress,
            log=log,
        ),
    )
    if cfg.sweep is not None:
        tcfg = tune_config(cfg, augment.run.uri, position)

        def best_uri(sweep: StepResult) -> str:
            return RunFolder.from_uri(sweep.manifest["details"]["best"]["run_uri"], cfg.storage).uri

        def sweep_then_seeds() -> StepResult:
            result = run_tune_job(tcfg, log=log)
            other_seeds(best_uri(result))  # the best trial, at the other seeds
            return result

        sweep = step("crome", "the λ sweep of the Crome RM (Ray Tune)", sweep_then_seeds)
        crome_uri, tie_weight = best_uri(sweep), sweep.manifest["details"]["best"]["tie_weight"]
    else:
        ccfg = crome_config(cfg, augment.run.uri)
        crome = step(
            "crome", "the Crome RM on the augmented pairs", trained(lambda: run_train_job(ccfg, log=log))
        )
        crome_uri, tie_weight = crome.run.uri, ccfg.loss.tie_weight
    ours = {"baseline": baseline.run.uri, "crome": crome_uri}
    if cfg.selfcheck is not None:

        def control() -> StepResult:
            data = run_plant_job(plant_config(cfg, ingest.run.uri, position, control=True), log=log)
            return run_train_job(control_config(cfg, data.run.uri, tie_weight), log=log)

        what = f"the positive control: the Crome trainer (λ {tie_weight:g}) with the attribute's exact ties"
        ours[CONTROL] = step(CONTROL, what, trained(control)).run.uri
    ecfg = evaluate_config(cfg, ours, position)
    evaluation = step(
        "evaluate",
        "the RMs side by side" if cfg.selfcheck else "baseline and Crome side by side",
        lambda: run_evaluate_job(
            ecfg,
            log=log,
            api_key=rewrites.api_key if rewrites else None,
            fallback_key=rewrites.fallback_key if rewrites else None,
        ),
    )

    own = Step(JOB, run_name(cfg), cfg, inputs={r.name: results[r.name].run for r in records}, force=force)
    if not own.begin():
        return PipelineOutcome(own.result, records, evaluation)  # type: ignore[arg-type]
    details = evaluation.manifest.get("details", {})
    checked = {}
    if cfg.selfcheck is not None:
        from crome_ray.pipeline.selfcheck import verdict

        checked = {
            "control_model": ours[CONTROL],
            "selfcheck": {
                "attribute": cfg.selfcheck.attribute,
                "position": position,
                **verdict(details).as_dict(),
            },
        }
    result = own.commit(
        {"steps": len(records), "done": sum(r.done for r in records)},
        steps=[r.__dict__ for r in records],
        crome_model=crome_uri,
        baseline_model=baseline.run.uri,
        models=details.get("models"),
        report=evaluation.run.committed().uri_of("report.md"),
        report_html=evaluation.run.committed().uri_of("report.html"),
        **checked,
    )
    return PipelineOutcome(result, records, evaluation)
