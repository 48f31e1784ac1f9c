"""Oracle throughput under a simulated Gemini quota: crome-ray's governor vs Ray Data LLM's HTTP stage.

Run as:
    .venv/bin/python bench/oracle_throughput.py                    # 3,000 RPM, 1.5 s median, 3 min each
    .venv/bin/python bench/oracle_throughput.py --rpm 10000 --skip-ray-llm \
        --workers 1 --batches-per-worker 12                       # Tier 3, the stage sized for it
    .venv/bin/python bench/oracle_throughput.py --duration 40 --rpm 600   # a quick look

Every side gets its own simulator process (same quota, same latency) and the same
prompts. crome-ray runs ``--workers`` stage actors. Ray Data LLM runs at its best
setting: its HTTP stage (Ray 2.60) awaits a batch's requests one after another, so an
actor has one call in flight, and holding the quota takes about rate × mean latency
actors. ``--ray-llm-actors 0`` (the default) sizes the pool that way (plus 15%), gives
each actor an equal share of the quota as ``qps`` (at least 1, an integer), and of one
CPU; retries on. Measured on the steady middle of each run (after ``--warmup``
seconds, before the last 5):

- sustained throughput as a fraction of the quota (answers/s over quota/s),
- over-rate 429s the simulator sent (quota 429s; none are injected otherwise),
- CPU milliseconds per answered call, across every process of the run (driver, Ray,
  actors; not the simulator), from the difference of two CPU samples;
- cores used: the same CPU seconds over the window's wall seconds, with Ray's daemons
  (``cores_used``) and the simulator's apart (``simulator_cores``).

A third side, ``raw-aiohttp``, is the floor at the same rate: one process, no Ray, no
governor or cache, sending the quota's worth every 0.2 s with aiohttp and validating
the JSON. CPU per call falls with the rate (fewer wake-ups per call), so crome-ray's
CPU is also reported as a ratio to this floor, measured in the same invocation.

The JSON line also splits CPU per call by process (``cpu_ms_per_call_by_process``) and
holds each side's settings (``settings``).

Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from simproc import sim_process

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}


def start_sim(rpm: int, latency: float, sigma: float) -> tuple[subprocess.Popen, str]:
    return sim_process(latency, "--rpm", str(rpm), "--window", "60", "--sigma", str(sigma))


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as r:
        return json.loads(r.read())


def _role(cmd: str, is_driver: bool) -> str:
    """A short name for a process: the driver, a Ray worker by its actor/task name, or a daemon."""
    if is_driver:
        return "driver"
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    for daemon in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor"):
        if daemon in cmd:
            return daemon
    return "other"


def cpu_seconds(exclude: set[int]) -> dict[str, float]:
    """CPU seconds so far: ``work`` = the driver and Ray worker processes (actors, tasks, the
    governor); ``system`` = Ray's own daemons (raylet, GCS, agents), a fixed cost per node;
    ``by_role`` splits both by process kind (see ``_role``)."""
    out: dict = {"work": 0.0, "system": 0.0, "by_role": {}}
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        if p.pid in exclude:
            continue
        try:
            t = p.cpu_times()
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        kind = "work" if p.pid == me.pid or cmd.startswith("ray::") else "system"
        out[kind] += t.user + t.system
        role = _role(cmd, p.pid == me.pid)
        out["by_role"][role] = out["by_role"].get(role, 0.0) + t.user + t.system
    return out


def prompts(n: int) -> list[dict]:
    return [
        {
            "id": str(i),
            "prompt": f"Question {i}: is the answer below accurate?\nAnswer: it depends on {i}.",
            "system": "You are a strict grader.",
            "schema": json.dumps(SCHEMA),
        }
        for i in range(n)
    ]


def rss_gib(exclude: set[int]) -> float:
    """Resident memory of this process and all its children (Ray's too), the simulator excluded."""
    me, total = psutil.Process(), 0
    for p in [me, *me.children(recursive=True)]:
        if p.pid in exclude:
            continue
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return round(total / 2**30, 2)


def sim_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def mean_latency(median: float, sigma: float) -> float:
    return median * math.exp(sigma * sigma / 2)  # lognormal


def ray_llm_actors(args: argparse.Namespace) -> int:
    """Ray Data LLM's best actor count: one call in flight per actor, so rate × mean latency (+15%)."""
    if args.ray_llm_actors:
        return args.ray_llm_actors
    return math.ceil(args.rpm / 60 * mean_latency(args.latency, args.sigma) * 1.15)


def measure(url: str, sim_pid: int, run, duration: float, rpm: int, warmup: float) -> dict:
    """Run ``run`` in a thread; sample the steady middle of it."""
    done = threading.Event()
    errors: list[BaseException] = []

    def target():
        try:
            run()
        except BaseException as e:  # reported, not swallowed
            errors.append(e)
        finally:
            done.set()

    start = time.monotonic()
    threading.Thread(target=target, daemon=True).start()
    done.wait(warmup)
    t1, a1, c1, k1 = time.monotonic(), stats(url)["answered"], cpu_seconds({sim_pid}), sim_cpu(sim_pid)
    done.wait(max(duration - warmup - 5.0, 1.0))
    t2, s2, c2, k2 = time.monotonic(), stats(url), cpu_seconds({sim_pid}), sim_cpu(sim_pid)
    calls = s2["answered"] - a1
    return {
        "fraction_of_quota": round(calls / (t2 - t1) / (rpm / 60.0), 4),
        "over_rate_429": s2["quota_429"],
        "cores_used": round((c2["work"] + c2["system"] - c1["work"] - c1["system"]) / (t2 - t1), 3),
        "simulator_cores": round((k2 - k1) / (t2 - t1), 3),
        "rss_gib": rss_gib({sim_pid}),
        "cpu_ms_per_call": round(1000 * (c2["work"] - c1["work"]) / max(calls, 1), 3),
        "cpu_ms_per_call_with_ray_daemons": round(
            1000 * (c2["work"] + c2["system"] - c1["work"] - c1["system"]) / max(calls, 1), 3
        ),
        "cpu_ms_per_call_by_process": {
            role: round(1000 * (sec - c1["by_role"].get(role, 0.0)) / max(calls, 1), 3)
            for role, sec in sorted(c2["by_role"].items())
        },
        "answered_in_window": calls,
        "window_s": round(t2 - t1, 1),
        "answered_twice": s2["answered_twice"],
        "finished": done.is_set(),
        "elapsed_s": round(time.monotonic() - start, 1),
        "error": repr(errors[0])[:300] if errors else None,
    }


CROME_SETTINGS = {
    "batch_size": 128,
    "worker_cpus": 0.25,
    "max_in_flight": 512,
    "governor_tick_s": 0.2,
}


def run_crome(url: str, rows: list[dict], rpm: int, workers: int, batches: int, tmp: Path) -> None:
    from pydantic import SecretStr

    from crome_ray.config import load_config
    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import run_oracle_job

    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        OracleJobConfig,
        None,
        [
            f"input={path}",
            f"storage.root={tmp / 'runs'}",
            f"oracle.base_url={url}",
            "max_output_tokens=256",
            f"workers={workers}",
            f"batches_per_worker={batches}",
            f"batch_size={CROME_SETTINGS['batch_size']}",
            f"worker_cpus={CROME_SETTINGS['worker_cpus']}",
            f"oracle.quota.rpm={rpm}",
            "oracle.quota.input_tpm=100000000",
            f"oracle.quota.max_in_flight={CROME_SETTINGS['max_in_flight']}",
            "oracle.budget.cap_usd=100",
            "oracle.retry.timeout_s=60",
        ],
    )
    run_oracle_job(cfg, SecretStr(KEY))


def ray_llm_settings(args: argparse.Namespace) -> dict:
    actors = ray_llm_actors(args)
    return {
        "actors": actors,
        "qps_per_actor": max(1, round(args.rpm / 60 / actors)),  # an integer in Ray 2.60
        "num_cpus_per_actor": round(1.0 / actors, 4),  # one CPU for the stage; the rest for its map tasks
        "batch_size": 64,
        "max_retries": 8,
    }


def run_ray_data_llm(url: str, rows: list[dict], settings: dict) -> None:
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, HttpRequestStageConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": KEY},
        qps=settings["qps_per_actor"],
        max_retries=settings["max_retries"],
        http_request_stage=HttpRequestStageConfig(
            concurrency=settings["actors"],
            batch_size=settings["batch_size"],
            num_cpus=settings["num_cpus_per_actor"],
        ),
    )

    def payload(row: dict) -> dict:
        return {
            "payload": {
                "contents": [{"role": "user", "parts": [{"text": row["prompt"]}]}],
                "systemInstruction": {"parts": [{"text": row["system"]}]},
                "generationConfig": {
                    "maxOutputTokens": 256,
                    "responseMimeType": "application/json",
                    "responseJsonSchema": json.loads(row["schema"]),
                },
            }
        }

    processor = build_processor(
        config, preprocess=payload, postprocess=lambda r: {"ok": "candidates" in r["http_response"]}
    )
    ds = processor(ray.data.from_items(rows, override_num_blocks=max(len(rows) // settings["batch_size"], 1)))
    for _ in ds.iter_batches(batch_size=None):
        pass


def run_raw_floor(url: str, rows: list[dict], rpm: int) -> None:
    """The least any client can do at this rate: one process, no Ray, no governor, no cache.
    Sends the quota's worth each 0.2 s tick with aiohttp, reads the JSON, validates it."""
    import asyncio

    import aiohttp

    from crome_ray.oracle.answers import parse_json_answer

    async def main() -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
        endpoint = f"{url}/v1beta/models/gemini-2.5-flash:generateContent"

        async def one(row: dict) -> None:
            body = {
                "contents": [{"role": "user", "parts": [{"text": row["prompt"]}]}],
                "systemInstruction": {"parts": [{"text": row["system"]}]},
                "generationConfig": {
                    "maxOutputTokens": 256,
                    "responseMimeType": "application/json",
                    "responseJsonSchema": SCHEMA,
                },
            }
            async with session.post(endpoint, json=body, headers={"x-goog-api-key": KEY}) as r:
                data = await r.json()
            parse_json_answer(data["candidates"][0]["content"]["parts"][0]["text"], SCHEMA)

        tick, per_s, start, sent, tasks = 0.2, rpm / 60.0 * 0.98, time.monotonic(), 0, []
        while sent < len(rows):
            due = min(len(rows), int((time.monotonic() - start) * per_s) + 1)
            tasks += [asyncio.create_task(one(r)) for r in rows[sent:due]]
            sent = due
            await asyncio.sleep(tick)
        await asyncio.gather(*tasks)
        await session.close()

    asyncio.run(main())


def emit(result: dict) -> dict:
    """The side's result line, printed as soon as it is measured: tearing Ray down under a
    job still running (the window ends before the prompts do) may fail, and must not lose it."""
    print("SIDE " + json.dumps(result), flush=True)
    return result


def run_side(side: str, args: argparse.Namespace) -> dict:
    """One side in this process: its own Ray, its own simulator process."""
    if side == "raw-aiohttp":
        rows = prompts(int(args.rpm * args.duration / 60))
        sim, url = start_sim(args.rpm, args.latency, args.sigma)
        try:
            fn = lambda: run_raw_floor(url, rows, args.rpm)  # noqa: E731
            result = measure(url, sim.pid, fn, args.duration, args.rpm, args.warmup)
            return emit(result | {"settings": {"tick_s": 0.2}})
        finally:
            sim.terminate()
            sim.wait(10)
    import ray

    if side == "ray.data.llm":  # its many actors start a few at a time: a longer warm-up, the same window
        args.duration += args.ray_llm_warmup - args.warmup
        args.warmup = args.ray_llm_warmup
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=tempfile.mkdtemp(prefix="crb", dir="/tmp"),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = prompts(int(args.rpm * args.duration / 60))
    tmp = Path(tempfile.mkdtemp(prefix="crome-bench-"))
    sim, url = start_sim(args.rpm, args.latency, args.sigma)
    try:
        if side == "crome-ray":
            fn = lambda: run_crome(url, rows, args.rpm, args.workers, args.batches_per_worker, tmp)  # noqa: E731
            settings = {
                "workers": args.workers,
                "batches_per_worker": args.batches_per_worker,
                **CROME_SETTINGS,
            }
        else:
            settings = ray_llm_settings(args)
            fn = lambda: run_ray_data_llm(url, rows, settings)  # noqa: E731
        return emit(measure(url, sim.pid, fn, args.duration, args.rpm, args.warmup) | {"settings": settings})
    finally:
        sim.terminate()
        sim.wait(10)
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rpm", type=int, default=3000)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds per side")
    ap.add_argument("--latency", type=float, default=1.5, help="median latency, seconds")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before the measured window")
    ap.add_argument(
        "--ray-llm-warmup",
        type=float,
        default=240.0,
        help="Ray Data LLM's warm-up: its ~100 actors start a few at a time on 2 cores (same window after)",
    )
    ap.add_argument("--workers", type=int, default=2, help="crome-ray: stage actors")
    ap.add_argument(
        "--ray-llm-actors", type=int, default=0, help="Ray Data LLM's actors (0: rate x mean latency + 15%%)"
    )
    ap.add_argument("--batches-per-worker", type=int, default=2, help="crome-ray: batches per actor at once")
    ap.add_argument(
        "--side", choices=["crome-ray", "ray.data.llm", "raw-aiohttp"], help="run one side in this process"
    )
    ap.add_argument("--skip-ray-llm", action="store_true")
    ap.add_argument("--skip-floor", action="store_true", help="skip the raw aiohttp floor at the same rate")
    args = ap.parse_args()
    if args.side:
        run_side(args.side, args)
        os._exit(0)  # do not wait for a side's leftover threads (Ray Data LLM keeps going)

    results = {}
    sides = ["crome-ray"] + ([] if args.skip_ray_llm else ["ray.data.llm"])
    sides += [] if args.skip_floor else ["raw-aiohttp"]
    for side in sides:  # one process per side: nothing of one run can slow the other
        cmd = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--rpm",
            str(args.rpm),
            "--duration",
            str(args.duration),
            "--latency",
            str(args.latency),
            "--sigma",
            str(args.sigma),
            "--workers",
            str(args.workers),
            "--batches-per-worker",
            str(args.batches_per_worker),
            "--warmup",
            str(args.warmup),
            "--ray-llm-actors",
            str(args.ray_llm_actors),
            "--ray-llm-warmup",
            str(args.ray_llm_warmup),
        ]
        timeout = (args.duration + args.ray_llm_warmup) * 3 + 300
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("SIDE ")), None)
        results[side] = json.loads(line[5:]) if line else {"error": (proc.stderr or proc.stdout)[-500:]}
    out = {
        "bench": "oracle_throughput",
        "rpm": args.rpm,
        "duration_s": args.duration,
        "latency_median_s": args.latency,
        "latency_sigma": args.sigma,
        "warmup_s": args.warmup,
        "ray_llm_warmup_s": args.ray_llm_warmup,
        "machine_cores": os.cpu_count(),
        "workers": args.workers,
        "batches_per_worker": args.batches_per_worker,
        "prompts": int(args.rpm * args.duration / 60),
        "results": results,
    }
    if all("fraction_of_quota" in results.get(s, {}) for s in ("crome-ray", "ray.data.llm")):
        out["throughput_ratio_vs_ray_data_llm"] = round(
            results["crome-ray"]["fraction_of_quota"]
            / max(results["ray.data.llm"]["fraction_of_quota"], 1e-9),
            3,
        )
    floor = results.get("raw-aiohttp", {}).get("cpu_ms_per_call")
    for side, key in (
        ("crome-ray", "cpu_ratio_vs_raw_floor"),
        ("ray.data.llm", "ray_llm_cpu_ratio_vs_raw_floor"),
    ):
        if floor and "cpu_ms_per_call" in results.get(side, {}):
            out[key] = round(results[side]["cpu_ms_per_call"] / floor, 2)
    print(json.dumps(out))
    header = ("side", "fraction of quota", "over-rate 429s", "CPU ms/call", "cores used", "answered twice")
    print("\n" + "".join(f"{h:>18}" for h in header))
    for name, r in results.items():
        if "error" in r and "fraction_of_quota" not in r:
            print(f"{name:>18}  failed: {r['error'][:200]}")
            continue
        cells = (
            name,
            f"{r['fraction_of_quota']:.3f}",
            r["over_rate_429"],
            f"{r['cpu_ms_per_call']:.2f}",
            f"{r['cores_used']:.2f}",
            r["answered_twice"],
        )
        print("".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
