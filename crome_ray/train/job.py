"""The training job on Ray: data through Ray Data, the loop on Ray Train, the model exported.

Layout of a run folder ``<root>/train/<run>/``:
- ``ray/``: Ray Train's storage (checkpoints every ``checkpoint_every`` steps, on S3 for
  a cluster). A killed worker restarts from the latest one (``FailureConfig``); a
  re-run of a run that did not commit resumes from it too.
- ``model/``, ``adapter/``: the export (see ``crome_ray.train.export``).
- ``metrics.jsonl``: every reported step; ``manifest.json`` + ``_COMMITTED`` at the end.

Inputs are committed pair tables (ingest or augmentation runs); a plain source file is
ingested first into ``<root>/ingest/``, with its bad rows quarantined there.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crome_ray.config import IngestConfig, SourceConfig, TrainConfig
from crome_ray.storage import COMMIT_MARKER, RunFolder, check_root, filesystem, split_uri

JOB = "train"


class TrainError(RuntimeError):
    """A training run that cannot go on; the message says why and what to do."""


@dataclass
class TrainResult:
    run: RunFolder
    skipped: bool
    manifest: dict[str, Any]


def default_run_name(cfg: TrainConfig) -> str:
    return f"rm-{cfg.fingerprint()[:8]}"


def pair_files(uri: str, cfg: TrainConfig, limit: int | None, log: Callable[[str], None]) -> list[str]:
    """Parquet files of the pairs table at ``uri`` (a committed run folder, or a source to ingest)."""
    fs, path = filesystem(uri, cfg.storage)
    if fs.exists(f"{path.rstrip('/')}/{COMMIT_MARKER}"):
        run = RunFolder.from_uri(uri, cfg.storage)
    elif fs.isdir(path) and fs.exists(f"{path.rstrip('/')}/pairs"):
        raise TrainError(f"{uri} is a run folder that was never committed: re-run the step that writes it")
    else:
        from crome_ray.data.ingest import run_ingest

        ingest = IngestConfig(source=SourceConfig(path=uri, format="auto", limit=limit), storage=cfg.storage)
        result = run_ingest(ingest)
        run = result.run
        log(f"ingested {uri} → {run.uri} ({'already there' if result.skipped else 'new'})")
    files = run.table_files("pairs")
    if not files:
        raise TrainError(f"{run.uri} has no pairs")
    proto = split_uri(run.uri)[0]  # where the table is (an ingested source lands under storage.root)
    return [f"{proto}://{f}" if proto in ("s3", "s3a") else str(Path(f).resolve()) for f in files]


def _pyarrow_fs(cfg: TrainConfig, uri: str):
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = filesystem(uri, cfg.storage)
    return PyFileSystem(FSSpecHandler(fs))


def _strip(uri: str) -> str:
    proto, path = split_uri(uri)
    return path if proto in ("s3", "s3a") else uri


class _Encode:
    """Ray Data callable: pairs → token columns (one tokenizer per actor)."""

    def __init__(self, model: str, storage_json: str, max_length: int):
        from transformers import AutoConfig, AutoTokenizer

        from crome_ray.config import StorageConfig
        from crome_ray.models import resolve_model
        from crome_ray.train.batches import PairEncoder
        from crome_ray.train.model import is_decoder_type, prepare_tokenizer

        # resolved here, on this actor's node (the driver's local path may not exist here)
        path = str(resolve_model(model, storage=StorageConfig.model_validate_json(storage_json)))
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        kind = AutoConfig.from_pretrained(path).model_type
        self.encoder = PairEncoder(tokenizer, max_length, is_decoder_type(kind))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {**self.encoder.encode_pairs(batch), "pair_id": batch["pair_id"]}


def _swap_half(batch: dict[str, Any]) -> dict[str, Any]:
    """The shuffled-label control: swap chosen and rejected where the pair id's hash is odd."""
    flip = np.array([int(hashlib.sha256(str(p).encode()).hexdigest(), 16) % 2 == 1 for p in batch["pair_id"]])
    flip &= batch["label"] != "tie"
    chosen, rejected = batch["chosen"].copy(), batch["rejected"].copy()
    chosen[flip], rejected[flip] = batch["rejected"][flip], batch["chosen"][flip]
    return {**batch, "chosen": chosen, "rejected": rejected}


def tokenized(files: list[str], cfg: TrainConfig, model: str, limit: int | None, shuffle: bool):
    import ray

    cols = ["pair_id", "prompt", "chosen", "rejected", "label"]
    ds = ray.data.read_parquet([_strip(f) for f in files], filesystem=_pyarrow_fs(cfg, files[0]))
    ds = ds.select_columns(cols)
    if limit:
        ds = ds.limit(limit)
    if shuffle:
        ds = ds.map_batches(_swap_half, batch_format="numpy")
    ds = ds.map_batches(
        _Encode,
        fn_constructor_args=(model, cfg.storage.model_dump_json(), cfg.max_length),
        batch_format="numpy",
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cfg.scaling.workers)),
        num_cpus=0.5,
    )
    return ds.materialize()


def _quiet_worker_logs() -> None:
    """A worker's output reaches the user's terminal: keep it to our progress line per log
    step. Ray Train logs each report (with its whole metrics dict) on a logger named by its
    file path, outside ``ray.train``, so its LoggingConfig does not reach it; Ray Data logs
    each dataset execution; transformers draws a progress bar per saved model."""
    import logging

    from crome_ray.ray_runtime import quiet_ray_data_logs

    quiet_ray_data_logs()
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray version: its lines stay
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _train_fn(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import os
    import tempfile

    import ray.train
    import ray.train.torch
    import torch

    from crome_ray.models import resolve_model
    from crome_ray.train.batches import rows_of
    from crome_ray.train.export import export_model
    from crome_ray.train.loop import train_worker
    from crome_ray.train.sharding import shard

    cfg = TrainConfig.model_validate_json(config["cfg"])
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval") if config["has_eval"] else None

    class RayRuntime:
        rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
        has_eval = eval_shard is not None

        def __init__(self) -> None:
            self.device = device

        def train_rows(self):
            for b in train_shard.iter_batches(batch_size=256, batch_format="numpy"):
                yield from rows_of(b)

        def eval_rows(self):
            # the eval table is not split (an equal split would drop the remainder): each
            # worker takes the rows whose pair id falls to its rank, so each is scored once
            for b in eval_shard.iter_batches(batch_size=256, batch_format="numpy"):
                mine = [int(str(p)[:8], 16) % self.world_size == self.rank for p in b["pair_id"]]
                yield from (row for row, keep in zip(rows_of(b), mine, strict=True) if keep)

        def wrap(self, model):
            if cfg.scaling.strategy == "fsdp":
                return shard(model, device)
            return ray.train.torch.prepare_model(model)

        def all_sum(self, values):
            if self.world_size == 1:
                return values
            t = torch.tensor(values, dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            return t.tolist()

        def latest_checkpoint(self):
            ckpt = ray.train.get_checkpoint()
            if ckpt is None:
                return None
            return ckpt.to_directory(tempfile.mkdtemp(prefix="crome-restore-"))

        def report(self, metrics, checkpoint_dir):
            ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            ray.train.report(metrics, checkpoint=ckpt)
            if self.rank == 0:  # the history survives restarts: it is rewritten whole each time
                # to the process's own stdout: Ray Train's patched print would log it twice
                print(progress_line(metrics, ckpt is not None), file=sys.__stdout__, flush=True)
                history.append(metrics)
                with run.fs.open(run.file("metrics.jsonl"), "wb") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in history).encode())

    run = RunFolder.from_uri(config["run_uri"], cfg.storage)
    history: list[dict[str, Any]] = []
    if ctx.get_world_rank() == 0 and run.fs.exists(run.file("metrics.jsonl")):
        with run.fs.open(run.file("metrics.jsonl"), "rb") as f:
            history = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]

    def export(rm) -> None:
        export_model(rm, run, cfg.max_length, merged=cfg.export_merged)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_worker_logs()
    if not cfg.scaling.use_gpu:  # Ray gives a worker fractional CPUs; torch would use every core
        torch.set_num_threads(max(1, round(cfg.scaling.cpus_per_worker)))
    # resolved on this worker's node (built-in and s3:// models are fetched once per node)
    model_path = str(resolve_model(config["model"], storage=cfg.storage))
    train_worker(cfg, model_path, RayRuntime(), config["total_steps"], export=export)


def progress_line(m: dict[str, Any], checkpoint: bool) -> str:
    parts = [f"step {m.get('step')}", f"loss {m.get('loss', 0):.4f}"]
    for key, label in (("pair_accuracy", "acc"), ("tie_abs_delta", "tie|Δ|"), ("eval_accuracy", "eval acc")):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts.append(f"{m.get('tokens_per_s', 0):,.0f} tok/s")
    if checkpoint:
        parts.append("checkpoint saved")
    return "  ".join(parts)


def run_train_job(
    cfg: TrainConfig, *, force: bool = False, log: Callable[[str], None] = print
) -> TrainResult:
    import ray
    from ray.data.aggregate import Count, Sum
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from crome_ray.models import resolve_model
    from crome_ray.train.loop import steps_for

    check_root(cfg.storage.root, cfg.storage)
    run = RunFolder.at(cfg.storage.root, JOB, cfg.run_name or default_run_name(cfg), cfg.storage)
    if split_uri(run.uri)[0] == "file":  # Ray Train workers run in a folder of their own
        run = RunFolder.from_uri(str(Path(run.path).resolve()), cfg.storage)
    fingerprint = cfg.fingerprint()
    if run.is_committed():
        if not force and run.manifest().get("fingerprint") == fingerprint:
            return TrainResult(run=run, skipped=True, manifest=run.manifest())
        run.prepare(fingerprint, force=force)  # a different config: refused unless forced
    elif force and run.exists():
        run.fs.rm(run.path, recursive=True)
    on_s3 = split_uri(run.uri)[0] in ("s3", "s3a")
    resumed = run.fs.exists(run.file("ray"))
    run.fs.makedirs(run.path, exist_ok=True)

    started = time.time()
    model_path = str(resolve_model(cfg.model, storage=cfg.storage))  # fetched here first: fails fast
    # workers resolve the name on their own node; a local folder is passed as an absolute path
    model_ref = (
        str(Path(cfg.model).expanduser().resolve()) if Path(cfg.model).expanduser().is_dir() else cfg.model
    )
    train_files = pair_files(cfg.train_data, cfg, cfg.train_limit, log)
    train_ds = tokenized(train_files, cfg, model_ref, cfg.train_limit, cfg.shuffle_labels)
    datasets = {"train": train_ds}
    if cfg.eval_data:
        datasets["eval"] = tokenized(
            pair_files(cfg.eval_data, cfg, cfg.eval_limit, log), cfg, model_ref, cfg.eval_limit, False
        )
    totals = {name: ds.aggregate(Count(), Sum("truncated"), Sum("is_tie")) for name, ds in datasets.items()}
    counts = {name: int(t["count()"]) for name, t in totals.items()}
    truncated = {name: int(t["sum(truncated)"] or 0) for name, t in totals.items()}
    ties = {name: int(t["sum(is_tie)"] or 0) for name, t in totals.items()}
    if counts["train"] < cfg.scaling.workers:
        raise TrainError(f"{counts['train']} training pairs for {cfg.scaling.workers} workers")
    total_steps = steps_for(cfg, counts["train"], cfg.scaling.workers)
    log(
        f"{counts['train']:,} training pairs ({ties['train']:,} ties, {truncated['train']:,} truncated to "
        f"{cfg.max_length} tokens) → {total_steps} steps on {cfg.scaling.workers} workers"
        + (f"; {counts['eval']:,} eval pairs" if "eval" in counts else "")
        + ("; resuming from the run's checkpoints" if resumed else "")
    )

    trainer = TorchTrainer(
        _train_fn,
        train_loop_config={
            "cfg": cfg.model_dump_json(),
            "model": model_ref,
            "total_steps": total_steps,
            "run_uri": run.uri,
            "has_eval": "eval" in datasets,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={
                "CPU": cfg.scaling.cpus_per_worker,
                **({"GPU": 1} if cfg.scaling.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name="ray",
            storage_path=_strip(run.uri) if on_s3 else run.path,
            storage_filesystem=_pyarrow_fs(cfg, run.uri) if on_s3 else None,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own line per logged step instead
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        raise TrainError(f"training failed: {type(e).__name__}: {e}") from e
    final = dict(result.metrics or {})
    manifest = {
        "job": JOB,
        "fingerprint": fingerprint,
        "config": json.loads(cfg.model_dump_json()),
        "model_path": model_path,
        "data": {"train": train_files, "eval_pairs": counts.get("eval")},
        "counts": {"pairs": counts, "ties": ties, "truncated": truncated},
        "steps": total_steps,
        "final": final,
        "resumed": resumed or int(final.get("started_at_step", 0)) > 0,
        "exported": {k: run.uri_of(k) for k in ("model", "adapter") if run.fs.exists(run.file(k))},
        "wall_s": round(time.time() - started, 1),
        "ray_version": ray.__version__,
    }
    run.commit(manifest)
    return TrainResult(run=run, skipped=False, manifest=manifest)
