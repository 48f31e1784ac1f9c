"""Learning check: a reward model trained on the UltraFeedback sample vs the same run with
shuffled labels, both scored on the 200-pair eval split.

Run as:
    .venv/bin/python bench/learning_check.py                 # MiniLM, full fine-tuning, ~2 epochs
    .venv/bin/python bench/learning_check.py --model smollm2 --finetune lora --steps 200

Both runs go through the real job (`run_train_job`: Ray Data, Ray Train, 2 CPU workers)
with the same config and seed; the control swaps chosen and rejected in a random half of
the training pairs (`shuffle_labels=true`), so it sees the same texts without a usable
preference signal. Prints one JSON line, then a table.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--finetune", default="full", choices=["full", "lora"])
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per worker per step")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=None, help="overrides --epochs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--output", default=None, help="storage root (default: a temporary folder)")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from crome_ray.config import load_config
    from crome_ray.ray_runtime import connect
    from crome_ray.train.config import TrainConfig
    from crome_ray.train.job import run_train_job

    root = args.output or tempfile.mkdtemp(prefix="crome-learning-")
    connect(num_cpus=2, dashboard=True)
    results = {}
    for label, shuffle in (("real labels", False), ("shuffled labels", True)):
        over = [
            f"model={args.model}",
            f"finetune={args.finetune}",
            f"optim.lr={args.lr}",
            f"max_length={args.max_length}",
            f"batch_size={args.batch_size}",
            f"epochs={args.epochs}",
            f"scaling.workers={args.workers}",
            f"scaling.cpus_per_worker={0.9 * 2 / args.workers:.2f}",
            f"shuffle_labels={str(shuffle).lower()}",
            "checkpoint_every=100000",
            "log_every=25",
            f"storage.root={root}",
            f"run_name=learning-{'shuffled' if shuffle else 'real'}",
            *([f"max_steps={args.steps}"] if args.steps else []),
        ]
        cfg = load_config(TrainConfig, None, over)
        started = time.time()
        result = run_train_job(cfg, force=True)
        final = result.details["final"]
        results[label] = {
            "eval_accuracy": round(final["eval_accuracy"], 4),
            "eval_pairs": int(final["eval_pairs"]),
            "train_pair_accuracy_last_window": round(final.get("pair_accuracy", float("nan")), 4),
            "steps": result.details["steps"],
            "train_pairs": result.manifest["counts"]["pairs"]["train"],
            "wall_s": round(time.time() - started, 1),
        }
    line = {
        "bench": "learning_check",
        "model": args.model,
        "finetune": args.finetune,
        "max_length": args.max_length,
        "global_batch": args.batch_size * args.workers,
        "lr": args.lr,
        "results": results,
        "gain": round(
            results["real labels"]["eval_accuracy"] - results["shuffled labels"]["eval_accuracy"], 4
        ),
    }
    print(json.dumps(line))
    print(f"\n{'run':>18} {'eval accuracy':>14} {'eval pairs':>11} {'steps':>6} {'wall s':>7}")
    for label, r in results.items():
        print(
            f"{label:>18} {r['eval_accuracy']:>14.3f} {r['eval_pairs']:>11} {r['steps']:>6} {r['wall_s']:>7}"
        )


if __name__ == "__main__":
    main()
