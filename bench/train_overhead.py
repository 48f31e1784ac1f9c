"""Ray Train overhead: tokens/s of crome-ray's training job vs a plain single-process
PyTorch loop with the same model, batches, optimizer and steps, in one run.

Run as:
    .venv/bin/python bench/train_overhead.py                  # MiniLM, full fine-tuning
    .venv/bin/python bench/train_overhead.py --model smollm2 --finetune lora --steps 12

Sides (each in its own process, one after the other, same thread count):
- plain: `train_worker` with a `LocalRuntime` (token rows in memory, no Ray at all);
- crome-ray: `run_train_job` on a local Ray cluster, 1 Ray Train worker (Ray Data
  shard iteration, Ray Train reporting, the checkpoint at the end);
- crome-ray DDP: the same job on 2 workers with half the threads each (information:
  on one 2-core machine DDP cannot be faster; it shows what the all-reduce costs).

Throughput is the real (non-pad) tokens through forward and backward per second,
averaged over the logged windows after the first (warm-up excluded), as every side
logs it the same way. Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from sides import run_side  # noqa: E402


def overrides(args, root: str) -> list[str]:
    return [
        f"model={args.model}",
        f"finetune={args.finetune}",
        f"max_length={args.max_length}",
        f"batch_size={args.batch_size}",
        f"max_steps={args.steps}",
        f"log_every={args.log_every}",
        "checkpoint_every=100000",
        "eval_data=null",
        f"train_limit={args.pairs}",
        f"storage.root={root}",
        "export_merged=false",
    ]


def side_plain(args, root: str) -> dict:
    import torch

    from crome_ray.config import load_config
    from crome_ray.data.inputs import pair_files, pairs_run
    from crome_ray.models import resolve_model
    from crome_ray.train.batches import rows_of
    from crome_ray.train.config import TrainConfig
    from crome_ray.train.dataset import Encode
    from crome_ray.train.loop import LocalRuntime, train_worker

    torch.set_num_threads(args.threads)
    cfg = load_config(TrainConfig, None, overrides(args, root))
    path = str(resolve_model(cfg.model))
    import pyarrow.parquet as pq

    files = pair_files(pairs_run(cfg.train_data, cfg.storage, cfg.train_limit))
    table = pq.read_table(files[0]).slice(0, args.pairs)
    batch = {
        c: table.column(c).to_numpy(zero_copy_only=False)
        for c in ("pair_id", "prompt", "chosen", "rejected", "label")
    }
    rows = rows_of(Encode(path, cfg.storage.model_dump_json(), cfg.max_length)(batch))
    runtime = LocalRuntime(rows)
    train_worker(cfg, path, runtime, total_steps=args.steps)
    return {"windows": [r["tokens_per_s"] for r in runtime.reports]}


def side_ray(args, root: str, workers: int) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from crome_ray.config import load_config
    from crome_ray.ray_runtime import connect
    from crome_ray.train.config import TrainConfig
    from crome_ray.train.job import run_train_job

    connect(num_cpus=2, dashboard=not args.no_dashboard)
    cpus = args.threads / workers
    cfg = load_config(
        TrainConfig,
        None,
        [*overrides(args, root), f"scaling.workers={workers}", f"scaling.cpus_per_worker={cpus}"],
    )
    result = run_train_job(cfg, force=True, log=lambda s: None)
    history = [
        json.loads(line) for line in result.run.fs.cat(result.run.file("metrics.jsonl")).decode().splitlines()
    ]
    return {"windows": [h["tokens_per_s"] for h in history], "wall_s": result.manifest["timings"]["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--finetune", default="full", choices=["full", "lora"])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", choices=["plain", "ray", "ray-ddp"], help="run one side in this process")
    ap.add_argument("--root", default=None)
    ap.add_argument("--no-dashboard", action="store_true", help="local Ray without its dashboard")
    args = ap.parse_args()

    if args.side:
        root = args.root or tempfile.mkdtemp(prefix="crome-bench-")
        out = (
            side_plain(args, root)
            if args.side == "plain"
            else side_ray(args, root, 1 if args.side == "ray" else 2)
        )
        print("RESULT " + json.dumps(out), flush=True)
        return

    root = tempfile.mkdtemp(prefix="crome-bench-")
    results = {}
    passed_on = ("model", "finetune", "max_length", "batch_size", "steps", "log_every", "pairs", "threads")
    for side in ("plain", "ray", "ray-ddp"):
        out = run_side(__file__, side, args, passed_on, "--root", root)
        if "error" in out:
            results[side] = out
            continue
        windows = out["windows"]
        steady = windows[1:] or windows
        results[side] = {
            "tokens_per_s": round(sum(steady) / len(steady), 1),
            "windows": [round(w) for w in windows],
        }
    base = results.get("plain", {}).get("tokens_per_s")
    for r in results.values():
        if base and "tokens_per_s" in r:
            r["ratio_vs_plain"] = round(r["tokens_per_s"] / base, 3)
    line = {
        "bench": "train_overhead",
        "model": args.model,
        "finetune": args.finetune,
        "max_length": args.max_length,
        "batch_pairs": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "results": results,
    }
    print(json.dumps(line))
    print(f"\n{'side':>14} {'tokens/s':>10} {'vs plain':>9}")
    for side, r in results.items():
        if "error" in r:
            print(f"{side:>14} failed: {r['error'][-300:]}")
        else:
            print(f"{side:>14} {r['tokens_per_s']:>10,.0f} {r.get('ratio_vs_plain', float('nan')):>9.3f}")


if __name__ == "__main__":
    main()
