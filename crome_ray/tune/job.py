"""The λ sweep: Ray Tune over the tie-loss weight × seeds, each trial a training run, ASHA on
the validation metric, the best named in a committed sweep run.

Train V2's pattern (``Tuner(TorchTrainer)`` is refused): a function trainable per trial runs
``run_train_job`` (so each trial is an ordinary training run, with its own committed folder,
manifest and model) and passes ``TuneReportCallback`` to its trainer, which hands each report
of the training to Tune. ASHA stops trials that trail at a rung; a stopped trial's run stays
uncommitted (a re-run of the sweep resumes it from its checkpoints, like any training run).

The sweep's driver tokenizes the data once (``train.job.prepare_data``) and hands the
materialized token tables to every trial (``tune.with_parameters``): the trials differ in λ
and seed only.

Every report a trial makes carries the metric: the trials evaluate, log and checkpoint at the
same steps (``train.eval_every``).

The sweep run (``<root>/tune/<run>/``) holds a ``trials`` table, ``report.json``, ``report.md``
and ``lambda.png`` (the metric against λ, one point per seed); its inputs are the data runs,
and its manifest names the best trial's training run, whose ``model/`` is the model to use.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from crome_ray.errors import CromeError
from crome_ray.evaluate.report import png_bytes
from crome_ray.runs import Step, StepResult
from crome_ray.storage import RunFolder, is_remote, path_in_filesystem, pyarrow_filesystem
from crome_ray.train.config import TrainConfig
from crome_ray.tune.config import SweepSettings, TuneConfig

JOB = "tune"

TRIALS_SCHEMA = pa.schema(
    [
        pa.field("tie_weight", pa.float64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # completed | stopped_early | failed
        pa.field("evaluations", pa.int64(), nullable=False),  # reports Tune received
        pa.field("step", pa.int64()),  # the last reported training step
        pa.field("metric", pa.float64()),  # at the last report
        pa.field("metric_best", pa.float64()),  # over its reports
        pa.field("clean_accuracy", pa.float64()),  # eval_accuracy at the last report
        pa.field("run_uri", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ],
    metadata={"crome_ray.table": "trials"},
)


class SweepError(CromeError, RuntimeError):
    """A sweep that cannot run or gave no result; the message says why."""


# ---------------------------------------------------------------- pure


def run_name(cfg: TuneConfig) -> str:
    return cfg.run_name or f"tune-{cfg.fingerprint()}"


def trial_run_name(sweep: str, tie_weight: float, seed: int) -> str:
    return f"{sweep}-lambda{tie_weight:g}-seed{seed}"


def trial_config(
    cfg: TuneConfig, sweep: str, tie_weight: float, seed: int, data: Mapping[str, str]
) -> TrainConfig:
    """The training a trial runs: the sweep's, with its λ and seed, reporting at every evaluation."""
    t = cfg.train
    every = t.eval_every or t.log_every
    return t.model_copy(
        update={
            "run_name": trial_run_name(sweep, tie_weight, seed),
            "loss": t.loss.model_copy(update={"tie_weight": tie_weight}),
            "seed": seed,
            "storage": cfg.storage,
            "train_data": data["train"],
            "eval_data": data.get("eval"),
            "log_every": every,
            "eval_every": every,
            "checkpoint_every": every,
        }
    )


def series(history: Any, name: str) -> list[float]:
    """A trial's reported values of ``name``, in order (none when it never reported it)."""
    return [float(v) for v in history[name].dropna()] if history is not None and name in history else []


def _measured(metric: float | None) -> bool:
    """A final metric that can be compared: not missing, not NaN (the probe's shift of a model
    whose clean rewards do not vary)."""
    return metric is not None and not math.isnan(metric)


def pick_best(
    trials: Sequence[Mapping[str, Any]], mode: str, clean_tolerance: float | None = None
) -> Mapping[str, Any] | None:
    """The best λ's best trial. λ is judged on the mean final metric over its completed seeds (one
    lucky seed does not choose λ; ties: the smaller λ), then its best seed is the model (ties: the
    smaller seed). With ``clean_tolerance``, only trials whose final clean accuracy is within it
    of the best count."""
    done = [t for t in trials if t["status"] == "completed" and _measured(t["metric"])]
    if not done:
        return None
    clean = [t["clean_accuracy"] for t in done if t.get("clean_accuracy") is not None]
    if clean_tolerance is not None and clean:
        floor = max(clean) - clean_tolerance - 1e-12
        done = [t for t in done if t.get("clean_accuracy") is not None and t["clean_accuracy"] >= floor]
    sign = -1 if mode == "max" else 1
    per_lambda: dict[float, list[Mapping[str, Any]]] = {}
    for t in done:
        per_lambda.setdefault(t["tie_weight"], []).append(t)
    lam = min(
        per_lambda, key=lambda w: (sign * sum(t["metric"] for t in per_lambda[w]) / len(per_lambda[w]), w)
    )
    return min(per_lambda[lam], key=lambda t: (sign * t["metric"], t["seed"]))


def order_note(s: SweepSettings) -> str | None:
    """A note for an ASHA sweep whose λ values start in ascending order (ASHA judges a trial only
    against those that reached a rung before it; docs/evaluation.md)."""
    if s.scheduler != "asha" or len(s.tie_weights) <= 2 or s.tie_weights != sorted(s.tie_weights):
        return None
    return (
        "note: ASHA judges a trial only against those that reached a rung before it, and λ starts in "
        "ascending order: if the metric improves with λ, no trial is stopped. Giving the value you "
        "expect to be good first, then the ends (e.g. 1, 0, 3, 0.1, 0.3), lets ASHA stop the rest"
    )


def by_lambda(trials: Sequence[Mapping[str, Any]]) -> dict[float, dict[str, Any]]:
    """Per λ: the final metric of each completed trial, their mean, and how many stopped early."""
    out: dict[float, dict[str, Any]] = {}
    for t in sorted(trials, key=lambda t: (t["tie_weight"], t["seed"])):
        d = out.setdefault(t["tie_weight"], {"metrics": [], "stopped_early": 0, "failed": 0})
        if t["status"] == "completed" and _measured(t["metric"]):
            d["metrics"].append(t["metric"])
        elif t["status"] == "stopped_early":
            d["stopped_early"] += 1
        else:
            d["failed"] += 1
    for d in out.values():
        d["mean"] = sum(d["metrics"]) / len(d["metrics"]) if d["metrics"] else None
    return out


def markdown(doc: Mapping[str, Any]) -> str:
    lines = [
        f"# λ sweep {doc['run_name']}",
        "",
        f"{doc['trials_total']} trials (λ × seed), scheduler {doc['scheduler']}, judged on "
        f"`{doc['metric']}` ({doc['mode']})"
        + (
            f", among trials within {doc['clean_tolerance']:g} of the best clean accuracy"
            if doc.get("clean_tolerance") is not None
            else ""
        )
        + f"; {doc['stopped_early']} stopped early; {doc['seconds']:.0f} s.",
        "",
        "| λ | seed | status | evaluations | step | metric | best metric | clean accuracy | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in doc["trials"]:
        m = "–" if t["metric"] is None else f"{t['metric']:.4f}"
        b = "–" if t["metric_best"] is None else f"{t['metric_best']:.4f}"
        c = "–" if t.get("clean_accuracy") is None else f"{t['clean_accuracy']:.4f}"
        lines.append(
            f"| {t['tie_weight']:g} | {t['seed']} | {t['status']} | {t['evaluations']} | {t['step']} "
            f"| {m} | {b} | {c} | {t['run_uri']} |"
        )
    best = doc.get("best")
    lines += [
        "",
        f"Best: λ = {best['tie_weight']:g}, seed {best['seed']}: {best['run_uri']}"
        if best
        else "No trial completed.",
    ]
    lines += ["", "![metric against λ](lambda.png)", ""]
    return "\n".join(lines)


def lambda_plot(doc: Mapping[str, Any]) -> bytes:
    """The metric against λ: each completed trial a dot, the mean over seeds a line, a stopped
    trial an x at its last reported value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [t for t in doc["trials"] if t["status"] == "completed" and t["metric"] is not None]
    stopped = [t for t in doc["trials"] if t["status"] == "stopped_early" and t["metric"] is not None]
    ax.scatter(
        [t["tie_weight"] for t in done], [t["metric"] for t in done], color="tab:blue", label="completed"
    )
    if stopped:
        ax.scatter([t["tie_weight"] for t in stopped], [t["metric"] for t in stopped], marker="x",
                   color="tab:red", label="stopped early (last value)")  # fmt: skip
    means = [(lam, d["mean"]) for lam, d in sorted(by_lambda(doc["trials"]).items()) if d["mean"] is not None]
    if means:
        ax.plot(
            [m[0] for m in means], [m[1] for m in means], color="tab:blue", alpha=0.6, label="mean over seeds"
        )
    best = doc.get("best")
    if best:
        ax.scatter(
            [best["tie_weight"]], [best["metric"]], s=160, facecolors="none", edgecolors="black", label="best"
        )
    positive = [t["tie_weight"] for t in doc["trials"] if t["tie_weight"] > 0]
    if positive and 20 * min(positive) < max(positive):  # λ over decades: linear near 0, log beyond
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel("λ (tie-loss weight)")
    ax.set_ylabel(doc["metric"])
    ax.set_title(f"{doc['metric']} against λ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


# ---------------------------------------------------------------- Ray


def _trial(config: dict[str, Any], prepared: Any = None) -> None:
    """One trial (in a Tune trial actor): a training run whose reports go to Tune, on the token
    tables the sweep's driver made once for every trial."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from crome_ray.train.job import run_train_job

    cfg = TrainConfig.model_validate_json(config["train"])
    run_train_job(cfg, log=lambda _: None, callbacks=[TuneReportCallback()], prepared=prepared)


def check_state_api() -> None:
    """ASHA stops a trial by killing it; Ray Train then frees the trial's workers through its
    placement-group cleaner, which polls Ray's state API (served by the dashboard). Without
    it the stopped trials' CPUs stay reserved and the next trials wait forever: refuse."""
    from ray.util.state import list_actors

    try:
        list_actors(limit=1, raise_on_missing_output=False)
    except Exception as e:
        raise SweepError(
            "Ray's state API is not reachable (the dashboard is not running): trials that ASHA stops "
            "would keep their workers' CPUs reserved and the sweep would hang. Start Ray with the "
            "dashboard (`ray start --head --include-dashboard=true`; `crome-ray tune` starts a local "
            f"one with it), or use sweep.scheduler=grid. ({type(e).__name__})"
        ) from None


def _expected_reports(cfg: TrainConfig) -> int:
    every = cfg.eval_every or cfg.log_every
    return max(1, math.ceil(cfg.max_steps / every)) if cfg.max_steps else 1000


def run_tune_job(cfg: TuneConfig, *, force: bool = False, log: Callable[[str], None] = print) -> StepResult:
    from ray import tune

    from crome_ray.data.inputs import pairs_run
    from crome_ray.train.job import prepare_data

    if cfg.sweep.scheduler == "asha":
        check_state_api()
    train_cfg = cfg.train.model_copy(update={"storage": cfg.storage})
    data_runs = {"train": pairs_run(train_cfg.train_data, train_cfg.storage, None, log)}
    if train_cfg.eval_data:
        data_runs["eval"] = pairs_run(train_cfg.eval_data, train_cfg.storage, None, log)
    if cfg.sweep.metric.startswith("eval_") and "eval" not in data_runs:
        raise SweepError(f"sweep.metric {cfg.sweep.metric} needs train.eval_data (a validation set)")
    step = Step(JOB, run_name(cfg), cfg, inputs=dict(data_runs), force=force)
    if not step.begin():
        log(f"{step.run.uri} is committed by this config and these inputs: nothing to do")
        return step.result  # type: ignore[return-value]
    data = {k: r.uri for k, r in data_runs.items()}
    name = step.run_name
    grid = [(lam, seed) for lam in cfg.sweep.tie_weights for seed in cfg.sweep.seeds]
    configs = {(lam, seed): trial_config(cfg, name, lam, seed, data).model_dump_json() for lam, seed in grid}
    first = trial_config(cfg, name, 0.0, 0, data)
    reports = _expected_reports(first)
    # the trials differ in λ and seed only: their token tables are made once, here, and shared
    # (a trial's own tokenizing pass costs ~15 s of Ray Data start-up on 2 CPUs)
    prepared = prepare_data(first, log, dict(data_runs))
    s = cfg.sweep
    scheduler = (
        # stop_last_trials=False: a trial that reaches the last rung finishes its run (export and
        # commit come after its last report; stopping it there would leave no model)
        tune.schedulers.ASHAScheduler(
            max_t=reports,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
            stop_last_trials=False,
        )
        if s.scheduler == "asha"
        else tune.schedulers.FIFOScheduler()
    )
    attempt = step.folder
    remote = is_remote(attempt.uri)
    log(
        f"{len(grid)} trials (λ {s.tie_weights} × seeds {s.seeds}), {s.scheduler}, on {s.metric} ({s.mode}); "
        f"{reports} evaluations a trial at most"
    )
    if note := order_note(s):
        log(note)
    # each trial's whole training config is its grid point
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, prepared=prepared), {"CPU": s.trial_cpus}),
        param_space={"train": tune.grid_search([configs[g] for g in grid])},
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=s.mode, scheduler=scheduler, max_concurrent_trials=s.max_concurrent_trials
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=path_in_filesystem(attempt.uri) if remote else attempt.path,
            storage_filesystem=pyarrow_filesystem(attempt.uri, cfg.storage) if remote else None,
            verbose=0,
        ),
    )
    started = time.monotonic()
    results = tuner.fit()
    seconds = time.monotonic() - started

    trials = []
    for result in results:
        tcfg = TrainConfig.model_validate_json(result.config["train"])
        run = RunFolder.at(cfg.storage.root, "train", tcfg.run_name or "", cfg.storage)
        history = result.metrics_dataframe
        values, clean = series(history, s.metric), series(history, "eval_accuracy")
        status = "failed" if result.error else ("completed" if run.is_committed() else "stopped_early")
        last = result.metrics or {}
        trials.append(
            {
                "tie_weight": tcfg.loss.tie_weight,
                "seed": tcfg.seed,
                "status": status,
                "evaluations": len(values),
                "step": int(last["step"]) if "step" in last else None,
                "metric": values[-1] if values else None,
                "metric_best": (max(values) if s.mode == "max" else min(values)) if values else None,
                "clean_accuracy": clean[-1] if clean else None,
                "run_uri": run.uri,
                "error": f"{type(result.error).__name__}: {result.error}"[:2000] if result.error else None,
            }
        )
    trials.sort(key=lambda t: (t["tie_weight"], t["seed"]))
    best = pick_best(trials, s.mode, s.clean_tolerance)
    table = step.table("trials", TRIALS_SCHEMA)
    for t in trials:
        table.add(t)
    doc = {
        "run_name": name,
        "metric": s.metric,
        "mode": s.mode,
        "clean_tolerance": s.clean_tolerance,
        "scheduler": s.scheduler,
        "trials_total": len(trials),
        "stopped_early": sum(t["status"] == "stopped_early" for t in trials),
        "failed": sum(t["status"] == "failed" for t in trials),
        "seconds": seconds,
        "trials": trials,
        "by_lambda": {f"{k:g}": v for k, v in by_lambda(trials).items()},
        "best": dict(best) if best else None,
    }
    files = {
        "report.json": json.dumps(doc, indent=2, sort_keys=True).encode(),
        "report.md": markdown(doc).encode(),
        "lambda.png": lambda_plot(doc),
    }
    for fname, body in files.items():
        with attempt.fs.open(attempt.file(fname), "wb") as f:
            f.write(body)
    if best is None:
        errors = [t["error"] for t in trials if t["error"]]
        raise SweepError(
            f"no trial of the sweep completed ({doc['failed']} failed, {doc['stopped_early']} stopped early)"
            + (f"; first error: {errors[0]}" if errors else "")
            + f"; the trials' report is at {attempt.uri_of('report.md')}"
        )
    return step.commit(
        {
            "trials": len(trials),
            "completed": sum(t["status"] == "completed" for t in trials),
            "stopped_early": doc["stopped_early"],
            "failed": doc["failed"],
        },
        best=dict(best),
        best_model=RunFolder.from_uri(best["run_uri"], cfg.storage).committed().uri_of("model"),
        metric=s.metric,
        mode=s.mode,
        clean_tolerance=s.clean_tolerance,
        scheduler=s.scheduler,
        seconds=round(seconds, 1),
        by_lambda=doc["by_lambda"],
    )
