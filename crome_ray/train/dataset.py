"""Training data on Ray Data: committed pair tables -> token rows, shuffled globally each epoch.

Inputs are committed pair tables (ingest or augmentation runs); a plain source file is
ingested first into ``<root>/ingest/``, with its bad rows quarantined there. Token rows
are made once (``materialize``); the global shuffle on top of them runs again at every
epoch with a seed of its own (``RandomSeedConfig(reseed_after_execution=True)``), so no
worker's share and no part of an epoch follows the file's order.

A seed names the training order. A seeded shuffle permutes the rows in the order it is given
them, and the same pairs can be written in many orders (an augmentation's sink actors write in
completion order; measured 2026-12-05: the self-check's Crome RM on the same 600 pairs, seed 0,
removed 44% of the planted attribute's shift in one run and none in another). So the token
table is put in a canonical order first (``canonical``): sorted by pair id (Ray Data's
distributed sort, whose sampled boundaries vary but whose order does not), then cut into blocks
by row count, so the shuffle's input is the same blocks whatever order the files held. A
``train_limit`` takes the first pairs in pair-id order (pair ids are content hashes: an
arbitrary but fixed subset), not the first written.

Tokenizing runs as Ray *tasks* with the encoder cached per worker process
(``encoder_for``), not as an actor pool: an actor pool is new processes for every dataset,
each importing transformers and loading the tokenizer again, while task workers are
pooled by Ray (per driver) and keep their encoder for the eval table, the next run of the
same driver and the next epoch's data. The counts the job prints come from the
materialized blocks, one light task per block (``table_counts``), instead of a Ray Data
aggregate, which starts a hash shuffle with its own actors. ``bench/train_data_prep.py``
compares both ways on the same tables (docs/benchmarks.md); on the test suite's training
runs the change took tests/test_train_ray.py from 796 s to 580 s.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

from crome_ray.config import StorageConfig
from crome_ray.errors import CromeError
from crome_ray.storage import path_in_filesystem, pyarrow_filesystem
from crome_ray.train.config import TrainConfig

COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "label"]


class TrainError(CromeError):
    """A training run that cannot go on; the message says why and what to do."""


class Encode:
    """Pairs → token columns with one tokenizer (made once per process by ``encoder_for``)."""

    def __init__(self, model: str, storage_json: str, max_length: int):
        from transformers import AutoConfig, AutoTokenizer

        from crome_ray.models import resolve_model
        from crome_ray.train.batches import PairEncoder
        from crome_ray.train.model import is_decoder_type, prepare_tokenizer

        # resolved here, on this actor's node (the driver's local path may not exist here)
        path = str(resolve_model(model, storage=StorageConfig.model_validate_json(storage_json)))
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        kind = AutoConfig.from_pretrained(path).model_type
        self.encoder = PairEncoder(tokenizer, max_length, is_decoder=is_decoder_type(kind))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {**self.encoder.encode_pairs(batch), "pair_id": batch["pair_id"]}
        if "variant" in batch:
            out["variant"] = batch["variant"]
        return out


@functools.lru_cache(maxsize=4)
def encoder_for(model: str, storage_json: str, max_length: int) -> Encode:
    """One ``Encode`` per worker process and setting, kept across tasks, datasets and runs."""
    return Encode(model, storage_json, max_length)


def encode_batch(
    batch: dict[str, Any],
    model: str,
    storage_json: str,
    max_length: int,
    cue: str | None = None,
    position: str = "auto",
) -> dict[str, Any]:
    """Ray Data task: pairs → token columns, with this process's cached encoder; with ``cue``,
    each preference pair also with the cue on its rejected answer (``with_cue_variants``), where
    this model's truncation keeps it when ``position`` is auto."""
    encode = encoder_for(model, storage_json, max_length)
    if cue:
        if position == "auto":
            position = "end" if encode.encoder.is_decoder else "start"
        batch = with_cue_variants(batch, cue, position)
    return encode(batch)


def swap_half(batch: dict[str, Any]) -> dict[str, Any]:
    """The shuffled-label control: swap chosen and rejected where the pair id's hash is odd."""
    flip = np.array([int(hashlib.sha256(str(p).encode()).hexdigest(), 16) % 2 == 1 for p in batch["pair_id"]])
    flip &= batch["label"] != "tie"
    chosen, rejected = batch["chosen"].copy(), batch["rejected"].copy()
    chosen[flip], rejected[flip] = batch["rejected"][flip], batch["chosen"][flip]
    return {**batch, "chosen": chosen, "rejected": rejected}


CLEAN, CUE_ON_REJECTED = 0, 1  # a validation row's variant (``TrainConfig.probe``)


def with_cue_variants(batch: dict[str, Any], cue: str, position: str) -> dict[str, Any]:
    """Each preference pair as it is (variant 0), then again with ``cue`` planted on its rejected
    answer (variant 1); ties only as they are. The copy's id keeps the pair's id in front, so both
    land on the same worker (``worker.eval_rows`` splits by the id's first characters)."""
    from crome_ray.cue import plant_cue

    pref = batch["label"] != "tie"
    cue_rows = {k: v[pref] for k, v in batch.items()}
    cue_rows["rejected"] = np.array(
        [plant_cue(str(r), cue, position) for r in cue_rows["rejected"]], dtype=object
    )
    cue_rows["pair_id"] = np.array([f"{p}/cue" for p in cue_rows["pair_id"]], dtype=object)
    out = {k: np.concatenate([batch[k], cue_rows[k]]) for k in batch}
    out["variant"] = np.concatenate(
        [np.full(len(batch["label"]), CLEAN), np.full(int(pref.sum()), CUE_ON_REJECTED)]
    )
    return out


def tokenized(
    files: list[str],
    cfg: TrainConfig,
    model: str,
    limit: int | None,
    *,
    swap_labels: bool,
    cue: str | None = None,
):
    """Token rows of the pairs in ``files``, made once (materialized); with ``cue``, each
    preference pair also with the cue on its rejected answer (the robustness probe)."""
    import ray

    ds = ray.data.read_parquet(
        [path_in_filesystem(f) for f in files], filesystem=pyarrow_filesystem(files[0], cfg.storage)
    )
    ds = ds.select_columns(COLUMNS)
    if limit:
        ds = ds.sort("pair_id").limit(limit)
    if swap_labels:
        ds = ds.map_batches(swap_half, batch_format="numpy")
    ds = ds.map_batches(
        encode_batch,
        fn_args=(model, cfg.storage.model_dump_json(), cfg.max_length, cue, cfg.probe.position),
        batch_format="numpy",
        batch_size=64,
        num_cpus=0.5,
    )
    return canonical(ds.materialize())


ROWS_PER_BLOCK = 512  # the canonical table's block size: the shuffle's tasks, by row count


def canonical(ds):
    """The rows sorted by pair id in blocks of ``ROWS_PER_BLOCK`` (materialized): the same table,
    block for block, whatever order and files the rows came in. The probe's copy of a pair
    (``<id>/cue``) sorts right after it."""
    rows = ds.count()  # a materialized table's count is in its metadata
    blocks = max(1, -(-rows // ROWS_PER_BLOCK))
    return ds.sort("pair_id").repartition(blocks, shuffle=False).materialize()


def _block_counts(block: Any) -> tuple[int, int, int]:
    import pyarrow.compute as pc
    from ray.data.block import BlockAccessor

    table = BlockAccessor.for_block(block).to_arrow()
    if "variant" in table.column_names:  # the probe's copies are not more pairs
        table = table.filter(pc.equal(table.column("variant"), CLEAN))
    if table.num_rows == 0:
        return 0, 0, 0
    return (
        table.num_rows,
        int(table.column("truncated").to_numpy().sum()),
        int(table.column("is_tie").to_numpy().sum()),
    )


def table_counts(ds) -> dict[str, int]:
    """Pairs, truncated pairs and ties of a materialized token table (one light task per block)."""
    import ray

    counter = ray.remote(num_cpus=0)(_block_counts)
    parts = ray.get([counter.remote(ref) for ref in ds.to_arrow_refs()])
    return {k: sum(p[i] for p in parts) for i, k in enumerate(("pairs", "truncated", "ties"))}


# CPUs per shuffle task. Ray Train keeps its workers' CPUs away from Ray Data, and Ray Data
# reserves a share of what is left for each operator; on a laptop (2 CPUs, workers at 0.9)
# that share is a tenth of a CPU, and a shuffle task asking for a whole one would wait
# forever. Moving token rows between blocks is light work.
SHUFFLE_TASK_CPUS = 0.05


def shuffled_each_epoch(ds, seed: int):
    """A global shuffle that is seeded (the run is reproducible) and new at each epoch
    (each pass over the data is a new execution of the dataset)."""
    from ray.data import RandomSeedConfig

    return ds.random_shuffle(
        seed=RandomSeedConfig(seed=seed, reseed_after_execution=True), num_cpus=SHUFFLE_TASK_CPUS
    )
