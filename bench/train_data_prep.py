"""Training's data preparation before the first step (tokenizing, counting): old way against new, one run.

Run as:
    .venv/bin/python bench/train_data_prep.py                      # tiny tables (8 and 4 pairs), MiniLM
    .venv/bin/python bench/train_data_prep.py --train 2000 --eval 200

A training run tokenizes its train and eval tables on Ray Data and counts pairs, ties and
truncated pairs before Ray Train starts. Both sides do that same work on one local Ray
cluster (2 CPUs), on the same committed pairs, twice in a row (a run, then the next run on
the same cluster, as in a test session or a sweep):

- ``actors+aggregate`` (before 2026-11-26): ``map_batches`` with an actor pool of
  ``Encode`` per table, then ``Dataset.aggregate(Count, Sum, Sum)`` per table;
- ``tasks+blocks`` (now, ``train.dataset.tokenized`` and ``table_counts``): ``map_batches``
  as tasks with the encoder cached per worker process, then one light task per block.

The sides run in the order given by ``--order`` (default new first, so the old side is
not handicapped by a cold cluster). Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def old_way(files, cfg, model, limit):
    import ray
    from ray.data.aggregate import Count, Sum

    from crome_ray.storage import path_in_filesystem, pyarrow_filesystem
    from crome_ray.train.dataset import COLUMNS, Encode

    ds = ray.data.read_parquet(
        [path_in_filesystem(f) for f in files], filesystem=pyarrow_filesystem(files[0], cfg.storage)
    ).select_columns(COLUMNS)
    if limit:
        ds = ds.limit(limit)
    ds = ds.map_batches(
        Encode,
        fn_constructor_args=(model, cfg.storage.model_dump_json(), cfg.max_length),
        batch_format="numpy",
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cfg.scaling.workers)),
        num_cpus=0.5,
    ).materialize()
    t = ds.aggregate(Count(), Sum("truncated"), Sum("is_tie"))
    return {
        "pairs": int(t["count()"]),
        "truncated": int(t["sum(truncated)"] or 0),
        "ties": int(t["sum(is_tie)"] or 0),
    }


def new_way(files, cfg, model, limit):
    from crome_ray.train.dataset import table_counts, tokenized

    return table_counts(tokenized(files, cfg, model, limit, swap_labels=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--eval", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--order", default="tasks+blocks,actors+aggregate")
    args = ap.parse_args()

    import ray

    from crome_ray.config import load_config
    from crome_ray.data.inputs import pair_files, pairs_run
    from crome_ray.train.config import TrainConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = tempfile.mkdtemp(prefix="bench-prep-")
    cfg = load_config(
        TrainConfig, None, [f"model={args.model}", f"storage.root={root}", f"max_length={args.max_length}"]
    )
    tables = {
        "train": (
            pair_files(pairs_run("data/samples/ultrafeedback/train_1k.jsonl", cfg.storage, None, print)),
            args.train,
        ),
        "eval": (
            pair_files(pairs_run("data/samples/ultrafeedback/eval_200.jsonl", cfg.storage, None, print)),
            args.eval,
        ),
    }
    sides = {"actors+aggregate": old_way, "tasks+blocks": new_way}
    result: dict = {}
    for name in args.order.split(","):
        runs = []
        for _ in range(2):  # a run, then the next run on the same cluster
            t0 = time.perf_counter()
            counts = {k: sides[name](files, cfg, args.model, n) for k, (files, n) in tables.items()}
            runs.append(round(time.perf_counter() - t0, 2))
        result[name] = {"first_run_s": runs[0], "second_run_s": runs[1], "counts": counts}
    ray.shutdown()
    old, new = result["actors+aggregate"], result["tasks+blocks"]
    assert old["counts"] == new["counts"], (old["counts"], new["counts"])  # the same work, the same answer
    line = {
        "bench": "train_data_prep",
        "model": args.model,
        "train_pairs": args.train,
        "eval_pairs": args.eval,
        "max_length": args.max_length,
        "ray_cpus": 2,
        "cores": os.cpu_count(),
        "order": args.order,
        "sides": result,
        "ratio_second_run_new_over_old": round(new["second_run_s"] / old["second_run_s"], 3),
    }
    print(json.dumps(line))
    print(f"\n{'side':<20} {'first run s':>12} {'second run s':>13}")
    for name, r in result.items():
        print(f"{name:<20} {r['first_run_s']:>12} {r['second_run_s']:>13}")
    print(f"\nnew / old, second run: {line['ratio_second_run_new_over_old']}")


if __name__ == "__main__":
    main()
