"""The augmentation's Ray Data graph (Ray composition): the input pairs through the stages to the
table sinks, sized for the cluster it runs on.

    read_parquet → repartition (blocks of whole oracle batches) → OtherRequestStage (IQN's
    request, RRM's answers, the controls' unrelated answer) → OracleWorkStage (the three
    phases of oracle calls per example) → BaselineFilterStage (when a baseline is set) →
    forward (each block to a ``TableSink``; its tally on to the driver)

``build_stream`` returns the dataset, lazy: the driver iterates it (``augment.job``). A local
fallback engine's ``OracleServer`` actors live for the whole run: they are appended to the
caller's ``servers`` list as soon as they start, so the driver closes and kills them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.errors import AugmentError
from crome_ray.augment.scan import InputScan
from crome_ray.augment.sink import forward
from crome_ray.augment.stages import BaselineFilterStage, OracleWorkStage, OtherRequestStage
from crome_ray.oracle.choice import OraclePlan
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.stage import OracleServer, stage_resources
from crome_ray.storage import join, path_in_filesystem, pyarrow_filesystem

INPUT_COLUMNS = [
    "pair_id",
    "prompt",
    "chosen",
    "rejected",
    "label",
    "kind",
    "source",
    "source_id",
    "subset",
    "score_chosen",
    "score_rejected",
    "metadata",
    "schema_version",
]
SINK_TASK_CPUS = 0.05  # the tasks that hand blocks to the sinks wait on them; they must not take a slot
# The memory a forward task's worker process holds: the task itself moves one block, but its
# process is a Ray worker with pyarrow loaded, 374 MiB (USS) measured in the demo (2026-12-05).
# Declared, Ray schedules on it and Ray Data's memory detector does not warn every 30 s that the
# stage asks for none (it recommends the measured peak + 25%, 467 MiB).
SINK_TASK_MEMORY = 512 * 2**20
# Reading a few Parquet files is I/O: a quarter CPU each, so the read never waits for a whole CPU
# beside the stages' actors and a task that is still finishing (the IQN pool's embedding; seen: a
# run on a 2-CPU cluster whose read waited for good, "Cluster resources are not enough")
READ_TASK_CPUS = 0.25
MAX_BLOCK_ROWS = 256  # rows per block of the stream at most (block_rows)


def cache_root(o: OracleConfig, cfg: AugmentConfig) -> str:
    return o.cache or join(cfg.storage.root, "oracle-cache")


def caller_args(o: OracleConfig, key: SecretStr, governor: str, cfg: AugmentConfig) -> dict[str, Any]:
    """What an oracle caller opens with (``OracleCaller.open``): its oracle, cache, key and governor."""
    return {
        "config_json": o.model_dump_json(),
        "cache_root": cache_root(o, cfg),
        "storage_json": cfg.storage.model_dump_json(),
        "api_key": key,
        "governor_name": governor,
    }


def engine_server(res: dict[str, Any], **options: Any):
    """The actor class of a local engine many oracle actors share (``OracleServer``), with the
    engine's resources: Ray places it on a node that has them (a GPU node for ``num_gpus``).
    Restarted if its node dies, wherever Ray finds the resources again (or, on a cluster that
    grows, once the autoscaler adds them), and the batches it was serving are sent to the new
    engine (``max_task_retries``): the answers it had cached are hits, the rest are asked again.
    The dead engine's calls are the governor's to settle: it presumes the engine gone after
    ``governor_core.silence_seconds`` (30 s for a local engine) and frees their keys, so the new
    engine does not wait on its dead self's 45-minute leases (seen on two nodes before that)."""
    import ray

    return ray.remote(OracleServer).options(
        num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_restarts=-1, max_task_retries=-1, **options
    )


def block_rows(rows: int, batch_size: int, slots: int, most: int = MAX_BLOCK_ROWS) -> int:
    """Rows per block of the stream: a whole number of oracle batches, at least four blocks per
    slot (oracle actors x batches each works on at once) so that the work spreads, and no more
    than ``most`` rows so that a block's results reach the driver soon. Not one batch a block:
    Ray Data's driver keeps bookkeeping for every block queued between stages (20 to 40 KiB
    each, measured: 6,250 blocks of 16 rows made the driver's own memory grow by 145 MiB
    from 10k to 100k rows, 391 blocks of 256 by 25 MiB; ``bench/augment_memory.py``)."""
    per_slot = math.ceil(rows / max(1, slots * 4))
    batches = max(1, min(per_slot, max(most, batch_size)) // batch_size)
    return batches * batch_size


def check_cpu_headroom(actors: dict[str, float], log: Callable[[str], None]) -> None:
    """The stages' actors live for the whole run; Ray Data's own tasks (file listing, read,
    repartition) each ask for a whole CPU beside them. On a fixed cluster with less than one
    CPU left over, the stream never starts and the run waits forever: say so instead. On a
    cluster that can grow (``RAY_ADDRESS`` set), warn: the autoscaler may add the CPU."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    reserved = sum(actors.values())
    if total - reserved >= 1.0:
        return
    parts = ", ".join(f"{k} {v:g}" for k, v in actors.items() if v)
    message = (
        f"the stages' actors reserve {reserved:g} of the cluster's {total:g} CPUs ({parts}); Ray Data's "
        "read and repartition tasks need 1 CPU beside them. Lower those settings (a local engine's "
        "threads do not depend on its Ray CPUs: oracle.engine.cpus_per_engine=0.5 serves as well) "
        "or add CPUs"
    )
    if os.environ.get("RAY_ADDRESS"):
        log(f"warning: {message}; the run waits until the cluster has them")
        return
    raise AugmentError(message)


def build_stream(
    cfg: AugmentConfig,
    files: list[str],
    scan: InputScan,
    plan: OraclePlan | None,
    governors: dict[str, str],
    sinks: list,
    servers: list,
    log: Callable[[str], None],
):
    """The run's dataset. ``plan``: the oracles (None: no example needs a call); ``governors``:
    the primary's and the fallback's governor actor names; ``servers``: where the fallback
    engines this starts are recorded for the driver."""
    import ray

    ds = ray.data.read_parquet(
        [path_in_filesystem(f) for f in files],
        filesystem=pyarrow_filesystem(files[0], cfg.storage),
        num_cpus=READ_TASK_CPUS,
    ).select_columns(INPUT_COLUMNS)
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    workers = {
        "workers": cfg.workers,
        "worker_cpus": cfg.worker_cpus,
        "batches_per_worker": cfg.batches_per_worker,
    }
    res = stage_resources(plan.primary if plan else cfg.oracle, **workers)
    # blocks small enough that every oracle actor gets work and the stream starts at once, few
    # enough that Ray Data's bookkeeping per block stays small (scan.rows stops at cfg.limit too)
    ds = ds.repartition(
        target_num_rows_per_block=block_rows(scan.rows, cfg.batch_size, res["size"] * cfg.batches_per_worker)
    )
    needs_other = cfg.tasks.iqn or cfg.tasks.rrm or (cfg.controls.examples and cfg.tasks.verify)
    other = bool(needs_other and len(scan.pool) >= 2)
    if other:
        ds = ds.map_batches(
            OtherRequestStage,
            fn_constructor_kwargs={
                "embedder": cfg.iqn.embedder,
                "storage_json": cfg.storage.model_dump_json(),
                "pool": [embedded_pool(cfg, scan.pool)],
                "candidates": cfg.iqn.candidates,
                "seed": cfg.iqn.seed,
                "max_tokens": cfg.iqn.max_tokens,
                "threads": max(1, round(cfg.iqn.cpus)),
            },
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=cfg.iqn.cpus,
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
        )
    f, fb = cfg.filter, plan.fallback if plan else None
    # a local fallback engine: engine.engines actors of its own, shared by the oracle actors
    fb_res = stage_resources(fb, **workers) if fb is not None and fb.backend == "vllm" else None
    check_cpu_headroom(
        {
            "iqn.cpus": cfg.iqn.cpus if other else 0.0,
            "the oracle stage": res["num_cpus"] * res["size"],
            "the fallback engines": fb_res["num_cpus"] * fb_res["size"] if fb_res else 0.0,
            "filter.cpus x filter.workers": f.cpus * f.workers if f.model else 0.0,
        },
        log,
    )
    if plan and fb is not None and fb_res is not None:
        server = engine_server(fb_res)
        for _ in range(fb_res["size"]):
            servers.append(server.remote(caller_args(fb, plan.fallback_key, governors["fallback"], cfg)))
    ds = ds.map_batches(
        OracleWorkStage,
        fn_constructor_kwargs={
            "config_json": cfg.model_dump_json(),
            "primary": caller_args(plan.primary, plan.api_key, governors["primary"], cfg) if plan else None,
            "fallback": caller_args(fb, plan.fallback_key, governors["fallback"], cfg)
            if plan and fb
            else None,
            "fallback_kinds": sorted(plan.fallback_kinds) if plan else [],
            "control_ids": scan.control_ids if cfg.tasks.verify else [],
            "oracle_ids": scan.oracle_ids if cfg.oracle_examples is not None else None,
            "embedder": cfg.iqn.embedder if cfg.leakage_embeddings and not cfg.tasks.rrm else None,
            "fallback_servers": servers,
        },
        compute=ray.data.ActorPoolStrategy(
            size=res["size"],
            max_concurrent_calls_per_actor=cfg.batches_per_worker,
            enable_true_multi_threading=cfg.batches_per_worker > 1,
        ),
        num_cpus=res["num_cpus"],
        num_gpus=res["num_gpus"],
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
    )
    if f.model:
        from crome_ray.train.score import scorer_pool

        pool = scorer_pool(f.model, cfg.storage, max_length=f.max_length, batch_size=f.batch_size,
                           workers=f.workers, cpus=f.cpus, gpus=f.gpus)  # fmt: skip
        pool["fn_constructor_kwargs"]["tau"] = f.tau
        ds = ds.map_batches(BaselineFilterStage, **pool, batch_size=64, batch_format="pyarrow")
    # the records go to the sinks, which write them; the driver reads each block's tally
    return ds.map_batches(
        forward,
        fn_kwargs={"sinks": sinks},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=SINK_TASK_CPUS,
        memory=SINK_TASK_MEMORY,
        compute=ray.data.TaskPoolStrategy(size=2 * len(sinks)),
    )


def embedded_pool(cfg: AugmentConfig, pool: list[tuple[str, str]]):
    """The pool's embeddings, made once in a Ray task, in the object store for the stage."""
    import ray

    @ray.remote
    def embed(embedder: str, storage_json: str, questions: list[str], max_tokens: int, threads: int):
        import torch

        from crome_ray.augment.embed import Embedder
        from crome_ray.config import StorageConfig
        from crome_ray.models import resolve_model

        torch.set_num_threads(threads)
        storage = StorageConfig.model_validate_json(storage_json)
        return Embedder(resolve_model(embedder, storage=storage), max_length=max_tokens)(questions)

    questions = [q for q, _ in pool]
    i = cfg.iqn
    task = embed.options(num_cpus=i.cpus).remote(
        i.embedder, cfg.storage.model_dump_json(), questions, i.max_tokens, max(1, round(i.cpus))
    )
    emb = ray.get(task)
    return ray.put({"questions": questions, "chosen": [c for _, c in pool], "embeddings": emb})
