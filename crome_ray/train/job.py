"""The training job on Ray (the driver): data through Ray Data, the loop on Ray Train, the model exported.

A run is a ``crome_ray.runs.Step`` with the pair tables as its inputs. Its attempt
folder ``<root>/train/<run>/attempts/<id>/`` holds:
- ``ray/``: Ray Train's storage (checkpoints every ``checkpoint_every`` steps, on S3 for
  a cluster). A killed worker restarts from the latest one (``FailureConfig``); a
  re-run of a run that did not commit takes up its attempt and resumes from it too.
- ``model/``, ``adapter/``: the export (see ``crome_ray.train.export``).
- ``metrics.jsonl``: every reported step; ``manifest.json`` at the end, then the commit.

The worker side is ``crome_ray.train.worker``; the data side ``crome_ray.train.dataset``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crome_ray.data.inputs import pair_files, pairs_run
from crome_ray.runs import Step, StepResult
from crome_ray.storage import RunFolder, is_remote, path_in_filesystem, pyarrow_filesystem
from crome_ray.train.config import TrainConfig
from crome_ray.train.dataset import (
    TrainError,
    shuffled_each_epoch,
    table_counts,
    tokenized,
)

JOB = "train"
TrainResult = StepResult
__all__ = [
    "JOB",
    "PreparedData",
    "TrainError",
    "TrainResult",
    "default_run_name",
    "prepare_data",
    "run_train_job",
]


def default_run_name(cfg: TrainConfig) -> str:
    return f"rm-{cfg.fingerprint()[:8]}"


@dataclass(frozen=True)
class PreparedData:
    """A run's inputs as token tables (materialized in Ray's object store) with their counts."""

    key: str  # data_key of the config they were made for
    inputs: dict[str, RunFolder]
    files: dict[str, list[str]]
    datasets: dict[str, Any]
    totals: dict[str, dict[str, int]]


def data_key(cfg: TrainConfig) -> str:
    """What the token tables depend on: the data, its limits, the tokenizer's model, the length."""
    parts = [cfg.train_data, cfg.eval_data, cfg.train_limit, cfg.eval_limit, cfg.model, cfg.max_length,
             cfg.shuffle_labels, cfg.probe.text, cfg.probe.position]  # fmt: skip
    return json.dumps(parts, default=str)


def input_runs(cfg: TrainConfig, log: Callable[[str], None]) -> dict[str, RunFolder]:
    """The committed pair runs the config names (a source file is ingested first)."""
    inputs = {"train": pairs_run(cfg.train_data, cfg.storage, cfg.train_limit, log)}
    if cfg.eval_data:
        inputs["eval"] = pairs_run(cfg.eval_data, cfg.storage, cfg.eval_limit, log)
    return inputs


def model_reference(cfg: TrainConfig) -> str:
    """The model as workers resolve it on their own node: a local folder as an absolute path."""
    local = Path(cfg.model).expanduser()
    return str(local.resolve()) if local.is_dir() else cfg.model


def prepare_data(
    cfg: TrainConfig, log: Callable[[str], None], inputs: dict[str, RunFolder] | None = None
) -> PreparedData:
    """The token tables of the config's pairs (Ray Data tasks, materialized) and their counts."""
    inputs = inputs or input_runs(cfg, log)
    files = {name: pair_files(run) for name, run in inputs.items()}
    limits = {"train": cfg.train_limit, "eval": cfg.eval_limit}
    datasets = {
        name: tokenized(
            f,
            cfg,
            model_reference(cfg),
            limits[name],
            swap_labels=cfg.shuffle_labels and name == "train",
            cue=cfg.probe.text if name == "eval" else None,
        )
        for name, f in files.items()
    }
    totals = {name: table_counts(ds) for name, ds in datasets.items()}
    return PreparedData(data_key(cfg), inputs, files, datasets, totals)


def run_train_job(
    cfg: TrainConfig,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    callbacks: list | None = None,
    prepared: PreparedData | None = None,
) -> TrainResult:
    """``callbacks``: Ray Train callbacks for the run (the sweep passes Tune's report callback).
    ``prepared``: the token tables ``prepare_data`` made for this config (the sweep makes them
    once for all its trials); by default the run makes its own."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from crome_ray.models import resolve_model
    from crome_ray.train.loop import steps_for
    from crome_ray.train.worker import train_fn

    inputs = prepared.inputs if prepared else input_runs(cfg, log)
    step = Step(
        JOB, cfg.run_name or default_run_name(cfg), cfg, inputs, force=force, resume=True, absolute=True
    )
    if not step.begin():
        return step.result
    if step.note:
        log(step.note)
    attempt = step.folder
    resumed = attempt.fs.exists(attempt.file("ray"))

    model_path = str(resolve_model(cfg.model, storage=cfg.storage))  # fetched here first: fails fast
    if prepared is None:
        prepared = prepare_data(cfg, log, inputs)
    elif prepared.key != data_key(cfg):
        raise TrainError("the prepared token tables were made for other data, model or lengths")
    files, datasets = prepared.files, dict(prepared.datasets)
    counts = {name: t["pairs"] for name, t in prepared.totals.items()}
    truncated = {name: t["truncated"] for name, t in prepared.totals.items()}
    ties = {name: t["ties"] for name, t in prepared.totals.items()}
    if counts["train"] < cfg.scaling.workers:
        raise TrainError(f"{counts['train']} training pairs for {cfg.scaling.workers} workers")
    datasets["train"] = shuffled_each_epoch(datasets["train"], cfg.seed)
    total_steps = steps_for(cfg, counts["train"], cfg.scaling.workers)
    log(
        f"{counts['train']:,} training pairs ({ties['train']:,} ties, {truncated['train']:,} truncated to "
        f"{cfg.max_length} tokens) → {total_steps} steps on {cfg.scaling.workers} workers"
        + (f"; {counts['eval']:,} eval pairs" if "eval" in counts else "")
        + ("; resuming from the run's checkpoints" if resumed else "")
    )

    remote = is_remote(attempt.uri)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={
            "cfg": cfg.model_dump_json(),
            "model": model_reference(cfg),
            "total_steps": total_steps,
            "attempt_uri": attempt.uri,
            "has_eval": "eval" in datasets,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.workers,
            use_gpu=cfg.scaling.use_gpu,
            placement_strategy=cfg.scaling.placement.upper(),
            resources_per_worker={
                "CPU": cfg.scaling.cpus_per_worker,
                **({"GPU": 1} if cfg.scaling.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name="ray",
            storage_path=path_in_filesystem(attempt.uri) if remote else attempt.path,
            storage_filesystem=pyarrow_filesystem(attempt.uri, cfg.storage) if remote else None,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own line per logged step instead
            callbacks=list(callbacks or []),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        raise TrainError(
            f"training failed: {type(e).__name__}: {e} (the attempt is kept at {attempt.uri}; "
            "re-run to resume from its checkpoints)"
        ) from e
    final = dict(result.metrics or {})
    exported = {k: attempt.uri_of(k) for k in ("model", "adapter") if attempt.fs.exists(attempt.file(k))}
    return step.commit(
        {"pairs": counts, "ties": ties, "truncated": truncated},
        model_path=model_path,
        data=files,
        steps=total_steps,
        final=json.loads(json.dumps(final, default=str)),
        resumed=resumed or int(final.get("started_at_step", 0)) > 0,
        exported=exported,
        ray_version=ray.__version__,
    )
