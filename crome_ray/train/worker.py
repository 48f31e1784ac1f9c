"""What runs on each Ray Train worker: the data shard, the runtime the loop talks to, the export.

The driver (``crome_ray.train.job``) passes the config as JSON and the URI of the run's
attempt folder; rank 0 writes ``metrics.jsonl`` and the export there. Checkpoints go
through Ray Train (its storage is ``<attempt>/ray/``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from crome_ray.progress import eta_text
from crome_ray.quiet import for_the_user
from crome_ray.storage import Folder
from crome_ray.train.config import TrainConfig


def quiet_worker_logs() -> None:
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


def train_fn(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; ``config`` is the driver's ``train_loop_config``."""
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
    started = time.monotonic()  # the ETA's clock: from here, model loading included
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval") if config["has_eval"] else None
    eval_cache: list = []

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
            # worker takes the rows whose pair id falls to its rank, so each is scored once.
            # The evaluation holds its rows in memory anyway (``loop.evaluate``): they are kept
            # after the first pass, so later evaluations skip a Ray Data execution (~2 s each)
            if eval_cache:
                return iter(eval_cache)
            rows = []
            for b in eval_shard.iter_batches(batch_size=256, batch_format="numpy"):
                mine = [int(str(p)[:8], 16) % self.world_size == self.rank for p in b["pair_id"]]
                rows += [row for row, keep in zip(rows_of(b), mine, strict=True) if keep]
            eval_cache.extend(rows)
            return iter(rows)

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

        def all_gather(self, value):
            if self.world_size == 1:
                return [value]
            out = [None] * self.world_size
            torch.distributed.all_gather_object(out, value)
            return out

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
                line = progress_line(
                    metrics, checkpoint=ckpt is not None, total=config["total_steps"], since=started
                )
                print(for_the_user(line), file=sys.__stdout__, flush=True)  # marked: the terminal shows it
                history.append(metrics)
                with run.fs.open(run.file("metrics.jsonl"), "wb") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in history).encode())

    run = Folder.from_uri(config["attempt_uri"], cfg.storage)  # this attempt of the run
    history: list[dict[str, Any]] = []
    if ctx.get_world_rank() == 0 and run.fs.exists(run.file("metrics.jsonl")):
        with run.fs.open(run.file("metrics.jsonl"), "rb") as f:
            history = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]

    def export(rm) -> None:
        export_model(rm, run, cfg.max_length, merged=cfg.export_merged)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_worker_logs()
    if not cfg.scaling.use_gpu:  # Ray gives a worker fractional CPUs; torch would use every core
        torch.set_num_threads(max(1, round(cfg.scaling.cpus_per_worker)))
    # resolved on this worker's node (built-in and s3:// models are fetched once per node)
    model_path = str(resolve_model(config["model"], storage=cfg.storage))
    train_worker(cfg, model_path, RayRuntime(), config["total_steps"], export=export)


def progress_line(
    m: dict[str, Any], *, checkpoint: bool, total: int | None = None, since: float | None = None
) -> str:
    """One logged step: ``step 75/150  loss ...  tok/s  ETA 1m20s``. The ETA is from the steps
    this process ran (``started_at_step`` on) in the seconds ``since`` it started them."""
    step = m.get("step")
    parts = [f"step {step}" + (f"/{total}" if total else ""), f"loss {m.get('loss', 0):.4f}"]
    for key, label in (("pair_accuracy", "acc"), ("tie_abs_delta", "tie|Δ|"), ("eval_accuracy", "eval acc")):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts.append(f"{m.get('tokens_per_s', 0):,.0f} tok/s")
    if total and since is not None and isinstance(step, int):
        start = int(m.get("started_at_step") or 0)
        parts.append(eta_text(step - start, total - start, time.monotonic() - since))
    if checkpoint:
        parts.append("checkpoint saved")
    return "  ".join(parts)
