"""Oracle throughput under a simulated Gemini quota: crome-ray's governor vs Ray Data LLM's HTTP stage.

Run as:
    .venv/bin/python bench/oracle_throughput.py                    # 3,000 RPM, 1.5 s median, 3 min each
    .venv/bin/python bench/oracle_throughput.py --duration 40 --rpm 600   # a quick look

Both sides get their own simulator process (same quota, same latency), the same
prompts and the same number of actors; Ray Data LLM gets the quota split evenly
across its actors (its ``qps`` is per actor), with retries on. Measured on the
steady middle of each run (after a warm-up, before the tail):

- sustained throughput as a fraction of the quota (answers/s over quota/s),
- over-rate 429s the simulator sent (quota 429s; none are injected otherwise),
- CPU milliseconds per answered call, across every process of the run (driver, Ray,
  actors; not the simulator), from the difference of two CPU samples.

A third side, ``raw-aiohttp``, is the floor at the same rate: one process, no Ray, no
governor or cache, sending the quota's worth every 0.2 s with aiohttp and validating
the JSON. CPU per call falls with the rate (fewer wake-ups per call), so crome-ray's
CPU is also reported as a ratio to this floor, measured in the same invocation.

The JSON line also splits CPU per call by process (``cpu_ms_per_call_by_process``).

Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(rpm: int, latency: float, sigma: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crome_ray.cli",
            "oracle",
            "sim",
            "--port",
            str(port),
            "--rpm",
            str(rpm),
            "--window",
            "60",
            "--latency",
            str(latency),
            "--sigma",
            str(sigma),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            stats(url)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("simulator did not start")


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


def measure(url: str, sim_pid: int, run, duration: float, rpm: int) -> dict:
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
    warm = min(20.0, duration * 0.2)
    done.wait(warm)
    t1, a1, c1 = time.monotonic(), stats(url)["answered"], cpu_seconds({sim_pid})
    done.wait(max(duration - warm - 5.0, 1.0))
    t2, s2, c2 = time.monotonic(), stats(url), cpu_seconds({sim_pid})
    calls = s2["answered"] - a1
    return {
        "fraction_of_quota": round(calls / (t2 - t1) / (rpm / 60.0), 4),
        "over_rate_429": s2["quota_429"],
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


def run_crome(url: str, rows: list[dict], rpm: int, workers: int, batches: int, tmp: Path) -> None:
    from pydantic import SecretStr

    from crome_ray.config import OracleJobConfig, load_config
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
            "batch_size=128",
            "worker_cpus=0.25",
            f"oracle.quota.rpm={rpm}",
            "oracle.quota.input_tpm=100000000",
            "oracle.quota.max_in_flight=512",
            "oracle.budget.cap_usd=100",
            "oracle.retry.timeout_s=60",
        ],
    )
    run_oracle_job(cfg, SecretStr(KEY))


def run_ray_data_llm(url: str, rows: list[dict], rpm: int, workers: int) -> None:
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, HttpRequestStageConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": KEY},
        qps=max(1, round(rpm / 60 / workers)),  # the same quota, split across the same number of actors
        max_retries=8,
        # the same actor count and CPU share as crome-ray's stage (default 1 CPU each cannot fit 2 cores)
        http_request_stage=HttpRequestStageConfig(concurrency=workers, batch_size=64, num_cpus=0.25),
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
    ds = processor(ray.data.from_items(rows, override_num_blocks=max(len(rows) // 64, 1)))
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


def run_side(side: str, args: argparse.Namespace) -> dict:
    """One side in this process: its own Ray, its own simulator process."""
    if side == "raw-aiohttp":
        rows = prompts(int(args.rpm * args.duration / 60))
        sim, url = start_sim(args.rpm, args.latency, args.sigma)
        try:
            return measure(url, sim.pid, lambda: run_raw_floor(url, rows, args.rpm), args.duration, args.rpm)
        finally:
            sim.terminate()
            sim.wait(10)
    import ray

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
        else:
            fn = lambda: run_ray_data_llm(url, rows, args.rpm, args.workers)  # noqa: E731
        return measure(url, sim.pid, fn, args.duration, args.rpm)
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
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches-per-worker", type=int, default=2, help="crome-ray: batches per actor at once")
    ap.add_argument(
        "--side", choices=["crome-ray", "ray.data.llm", "raw-aiohttp"], help="run one side in this process"
    )
    ap.add_argument("--skip-ray-llm", action="store_true")
    ap.add_argument("--skip-floor", action="store_true", help="skip the raw aiohttp floor at the same rate")
    args = ap.parse_args()
    if args.side:
        print("SIDE " + json.dumps(run_side(args.side, args)), flush=True)
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
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 3 + 300)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("SIDE ")), None)
        results[side] = json.loads(line[5:]) if line else {"error": (proc.stderr or proc.stdout)[-500:]}
    out = {
        "bench": "oracle_throughput",
        "rpm": args.rpm,
        "duration_s": args.duration,
        "latency_median_s": args.latency,
        "latency_sigma": args.sigma,
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
    if all("cpu_ms_per_call" in results.get(s, {}) for s in ("crome-ray", "raw-aiohttp")):
        out["cpu_ratio_vs_raw_floor"] = round(
            results["crome-ray"]["cpu_ms_per_call"] / max(results["raw-aiohttp"]["cpu_ms_per_call"], 1e-9), 2
        )
    print(json.dumps(out))
    header = ("side", "fraction of quota", "over-rate 429s", "CPU ms/call", "answered twice")
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
            r["answered_twice"],
        )
        print("".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
