"""Driver memory while the augmentation streams: nothing on the driver should grow with the data.

Run as:
    .venv/bin/python bench/augment_memory.py --rows 10000,100000

For each size, a source file of that many distinct pairs (the 1,000-row UltraFeedback sample,
repeated with a numbered request so every request and cache key is new) goes through
``run_augment_job`` against the Gemini simulator (a process of its own) at zero latency, on
a fresh local Ray cluster (2 CPUs) and a fresh storage root. Tasks are cut to one call an
example (the CAN neutral; IQN on, with MiniLM at 16 tokens) so that 100k rows take tens of
minutes, not hours: the stages, the records and the driver's routing and writers are the
same at any task mix. Each size runs in a process of its own; the ingest runs first, and a
thread samples the driver's RSS every 0.5 s from the start of the stream to its end. One JSON
line, then a table and the ratio of the peaks (goal: <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simproc import sim_process  # noqa: E402

TASKS = [
    "tasks.causal=false",
    "tasks.elements=false",
    "tasks.verify=false",
    "tasks.para=false",
    "controls.examples=0",
    "leakage_embeddings=false",
    "iqn.pool=256",
    "iqn.max_tokens=16",
]


def source(rows: int, folder: Path) -> Path:
    sample = [
        json.loads(x) for x in (REPO / "data/samples/ultrafeedback/train_1k.jsonl").read_text().splitlines()
    ]
    path = folder / f"source-{rows}.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            r = dict(sample[i % len(sample)])
            r["prompt"] = f"{r['prompt']} (variant {i})"
            f.write(json.dumps(r) + "\n")
    return path


def rss_kinds() -> dict[str, int]:
    """RssAnon (the process's own heap), RssFile and RssShmem (shared memory it has touched:
    Ray's object store is shared memory, so blocks the driver reads count in its RSS)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


def run(rows: int) -> dict:
    import psutil
    import ray
    from pydantic import SecretStr

    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import input_files, run_augment_job
    from crome_ray.config import load_config

    me = psutil.Process()
    peak, stop = [me.memory_info().rss], threading.Event()
    kinds: list[dict[str, int]] = []  # what the RSS is made of, at each sample

    def sample():
        while not stop.wait(0.5):
            peak.append(me.memory_info().rss)
            kinds.append(rss_kinds())

    sim, url = sim_process(latency=0.0)  # apart: its bookkeeping grows with the calls it answers
    with tempfile.TemporaryDirectory() as tmp:
        path = source(rows, Path(tmp))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        cfg = load_config(
            AugmentConfig,
            None,
            [
                f"input={path}",
                f"storage.root={tmp}/runs",
                f"oracle.base_url={url}",
                "oracle.model=gemini-2.5-flash-lite",
                "oracle.budget.cap_usd=1000",
                "oracle.quota.rpm=6000000",
                "oracle.quota.input_tpm=10000000000",
                "oracle.quota.max_in_flight=256",
                "batch_size=16",
                *TASKS,
            ],
        )
        t = threading.Thread(target=sample, daemon=True)
        before_ingest = me.memory_info().rss
        input_files(cfg, lambda _: None)  # the ingest first (the run below finds it committed)
        ingest_peak = me.memory_info().rss
        peak[:] = [ingest_peak]
        kinds.append(rss_kinds())
        t.start()
        started = time.monotonic()
        result = run_augment_job(cfg, SecretStr("bench"))
        seconds = time.monotonic() - started
        stop.set()
        ray.shutdown()
    sim.terminate()
    sim.wait(10)
    return {
        "rows": rows,
        "pairs": result.counts["pairs"],
        "calls": result.details["oracle"]["grants"],
        "seconds": round(seconds, 1),
        "calls_per_s": round(result.details["oracle"]["grants"] / seconds, 1),
        "peak_rss_mib": round(max(peak) / 2**20, 1),
        "start_rss_mib": round(peak[0] / 2**20, 1),  # after the ingest, as the stream starts
        "ingest_added_mib": round((ingest_peak - before_ingest) / 2**20, 1),
        # the peaks of the driver's own memory and of the object store pages it has mapped
        "peak_anon_mib": round(max(k["RssAnon"] for k in kinds) / 2**20, 1),
        "peak_shmem_mib": round(max(k["RssShmem"] for k in kinds) / 2**20, 1),
    }


def run_apart(rows: int) -> dict:
    """One size in a process of its own: a second size in the same process would start from
    what the first left behind (the allocator keeps freed memory)."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(rows)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,100000")
    ap.add_argument("--one", type=int, help="(internal) run one size here and print its JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run(args.one)))
        return
    sizes = [int(x) for x in args.rows.split(",")]
    results = [run_apart(n) for n in sizes]
    ratio = round(results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"], 3)
    print(
        json.dumps(
            {
                "bench": "augment_memory",
                "tasks": TASKS,
                "cores": os.cpu_count(),
                "runs": results,
                "peak_ratio": ratio,
                "goal": "<= 1.2",
            }
        )
    )
    print(
        f"\n{'rows':>8} {'pairs':>8} {'calls':>8} {'s':>7} {'calls/s':>8} {'peak RSS MiB':>13} "
        f"{'anon':>7} {'shmem':>7} {'ingest +':>9}"
    )
    for r in results:
        print(
            f"{r['rows']:>8} {r['pairs']:>8} {r['calls']:>8} {r['seconds']:>7} {r['calls_per_s']:>8} "
            f"{r['peak_rss_mib']:>13} {r['peak_anon_mib']:>7} {r['peak_shmem_mib']:>7} "
            f"{r['ingest_added_mib']:>9}"
        )
    print(f"peak ratio {ratio} (goal <= 1.2)")


if __name__ == "__main__":
    main()
