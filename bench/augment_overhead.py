"""What the Crome stages add to the oracle calls: the augmentation pipeline against the oracle
job alone, on the same calls, in one run.

Run as:
    .venv/bin/python bench/augment_overhead.py                  # 200 examples
    .venv/bin/python bench/augment_overhead.py --examples 100   # a quicker look

The calls: ``--examples`` pairs of the 1,000-row UltraFeedback sample, with the tasks of the
Ray-tier test (one attribute, no elements call, CAN and PARA, verification; IQN on with
MiniLM; leakage embeddings and control probes off). First the pure flow runs each example
offline with an ``ask`` that answers as the simulator does and records every request it makes:
that list, as the oracle job's input rows (prompt, system, schema, max tokens), is side B's
work. The simulator's answers are random, so the live augmentation (side A) may make a few
calls more or fewer: both counts are printed.

- side A, ``augment``: ``run_augment_job`` on the examples, from the ingested sample to the
  committed tables (IQN's embedding stage, the oracle work stage with its checks, the driver's
  routing and writers);
- side A', ``augment-no-iqn``: the same without IQN (no embedding stage, no pool to embed;
  IQN makes no oracle call, so the calls are the same);
- side B, ``oracle-job``: ``run_oracle_job`` on the recorded requests (one flat stage).

Each side has its own fresh local Ray cluster (2 CPUs), its own simulator process (zero
latency, no quota) and a fresh storage root; the same oracle settings (actors, batch size,
in-flight limit). Measured: wall seconds of the job call, calls per second, examples per
second, and CPU milliseconds per oracle call over every process of the side (driver, Ray,
actors) except the simulator. Prints one JSON line, then a table with the ratios A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simproc import sim_process  # noqa: E402

SAMPLE = REPO / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
MODEL = "gemini-2.5-flash-lite"
TASKS = [
    "tasks.attributes=1",
    "tasks.elements=false",
    "controls.examples=0",
    "leakage_embeddings=false",
]
ORACLE = [
    f"oracle.model={MODEL}",
    "oracle.budget.cap_usd=100",
    "oracle.quota.rpm=6000000",
    "oracle.quota.input_tpm=10000000000",
    "oracle.quota.max_in_flight=256",
    "workers=2",
    "batch_size=8",
]


def recorded_requests(examples: int) -> list[dict]:
    """Every request the flow makes for the first ``examples`` augmentable pairs, answered as the
    simulator answers them."""
    from crome_ray.augment import prompts as P
    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.flow import Answer, Settings, augment_example
    from crome_ray.config import load_config
    from crome_ray.oracle.simulated_tasks import task_answer

    cfg = load_config(AugmentConfig, None, TASKS)
    settings = Settings(cfg.tasks, cfg.checks, cfg.leakage)
    rng, rows = random.Random(0), []

    async def ask(tasks):
        out = {}
        for t in tasks:
            row = t.row()
            rows.append(row)
            value = task_answer(json.loads(row["schema"]), (row["system"] or "") + row["prompt"], rng)
            out[t.id] = Answer(value, backend="gemini", model=MODEL)
        return out

    pairs = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    done = 0
    for i, r in enumerate(pairs):
        if done == examples:
            break
        meta = r.get("metadata") or {}
        if meta.get("score_chosen") == meta.get("score_rejected") or r["chosen"] == r["rejected"]:
            continue  # what the ingest drops (a tie) or cannot pair
        asyncio.run(
            augment_example(P.Example(str(i), r["prompt"], r["chosen"], r["rejected"]), ask, settings)
        )
        done += 1
    for i, row in enumerate(rows):
        row["id"] = f"r{i:06d}"
    return rows


def cpu_seconds(exclude: int) -> float:
    """CPU seconds of this process and all its descendants, the simulator excluded."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        if p.pid == exclude:
            continue
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def side(name: str, examples: int, rows: list[dict]) -> dict:
    import ray
    from pydantic import SecretStr

    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import run_augment_job
    from crome_ray.config import load_config
    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import run_oracle_job

    proc, url = sim_process(latency=0.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            common = [f"storage.root={tmp}/runs", f"oracle.base_url={url}", *ORACLE]
            if name.startswith("augment"):
                tasks = [*TASKS, "tasks.iqn=false"] if name == "augment-no-iqn" else TASKS
                cfg = load_config(
                    AugmentConfig, None, [f"input={SAMPLE}", f"limit={examples}", *tasks, *common]
                )
                run = lambda: run_augment_job(cfg, SecretStr("bench"))  # noqa: E731
            else:
                path = Path(tmp) / "requests.jsonl"
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
                cfg = load_config(OracleJobConfig, None, [f"input={path}", "max_output_tokens=2048", *common])
                run = lambda: run_oracle_job(cfg, SecretStr("bench"))  # noqa: E731
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            result = run()
            seconds, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
            oracle = result.details["oracle"]
            ray.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
    calls = oracle["grants"]
    return {
        "side": name,
        "examples": examples,
        "calls": calls,
        "seconds": round(seconds, 1),
        "calls_per_s": round(calls / seconds, 1),
        "examples_per_s": round(examples / seconds, 2),
        "cpu_ms_per_call": round(1000 * cpu / max(calls, 1), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200)
    args = ap.parse_args()
    rows = recorded_requests(args.examples)
    sides = ("augment", "augment-no-iqn", "oracle-job")
    results = [side(name, args.examples, rows) for name in sides]
    b = results[-1]
    ratios = {
        r["side"]: {
            "seconds": round(r["seconds"] / b["seconds"], 2),
            "calls_per_s": round(r["calls_per_s"] / b["calls_per_s"], 2),
            "cpu_ms_per_call": round(r["cpu_ms_per_call"] / b["cpu_ms_per_call"], 2),
        }
        for r in results[:-1]
    }
    print(
        json.dumps(
            {
                "bench": "augment_overhead",
                "recorded_requests": len(rows),
                "tasks": TASKS,
                "oracle": ORACLE,
                "simulator": {"latency_s": 0, "quota": None},
                "cores": os.cpu_count(),
                "sides": results,
                "ratio_augment_to_oracle_job": ratios,
            }
        )
    )
    print(f"\n{'side':<12} {'calls':>7} {'s':>7} {'calls/s':>8} {'examples/s':>11} {'CPU ms/call':>12}")
    for r in results:
        print(
            f"{r['side']:<12} {r['calls']:>7} {r['seconds']:>7} {r['calls_per_s']:>8} "
            f"{r['examples_per_s']:>11} {r['cpu_ms_per_call']:>12}"
        )
    for name, r in ratios.items():
        print(
            f"{name} / oracle job: time {r['seconds']}x, calls/s {r['calls_per_s']}x, "
            f"CPU per call {r['cpu_ms_per_call']}x"
        )


if __name__ == "__main__":
    main()
