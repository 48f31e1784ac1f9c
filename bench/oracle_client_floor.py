"""CPU per oracle call in one process, layer by layer: where the oracle's CPU floor is.

Run as:
    .venv/bin/python bench/oracle_client_floor.py            # 2,000 calls per side, 50 in flight

The Gemini simulator runs in its own process (20 ms latency, no quota), so its CPU is
not counted. Each side sends the same schema-constrained grading prompts and validates
the JSON answer; CPU is this process's `time.process_time()` over the calls:

- raw aiohttp: a hand-made POST of the REST body, `json.loads`, schema validation
  (the least any client can do);
- google-genai: `client.aio.models.generate_content` with a `GenerateContentConfig`
  (the SDK's public path: pydantic request and response conversions);
- crome-ray backend: `GeminiBackend.generate` (the REST body through the SDK's API
  client: its auth, URL, timeout and errors, no pydantic round trip);
- crome-ray client: `OracleClient.call_many` (backend + retries + response cache
  writes + in-process governor and budget).

Prints one JSON line, then a table with ratios against raw aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}
MODEL = "gemini-2.5-flash"


def prompt(i: int) -> str:
    return f"Does rewrite {i} keep the meaning of the original answer? " * 8


async def run_raw(base: str, n: int, c: int) -> float:
    import aiohttp

    from crome_ray.oracle.answers import parse_json_answer

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        body = {
            "contents": [{"role": "user", "parts": [{"text": prompt(i)}]}],
            "generationConfig": {
                "temperature": 0.0,
                "maxOutputTokens": 256,
                "responseMimeType": "application/json",
                "responseJsonSchema": SCHEMA,
            },
        }
        async with (
            sem,
            session.post(
                f"{base}/v1beta/models/{MODEL}:generateContent", json=body, headers={"x-goog-api-key": "k"}
            ) as r,
        ):
            data = await r.json()
            parse_json_answer(data["candidates"][0]["content"]["parts"][0]["text"], SCHEMA)

    await asyncio.gather(*(one(-1 - i) for i in range(c)))  # warm-up
    t = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    used = time.process_time() - t
    await session.close()
    return used


async def run_backend(base: str, n: int, c: int, public: bool) -> float:
    from crome_ray.oracle.answers import parse_json_answer
    from crome_ray.oracle.config import OracleConfig
    from crome_ray.oracle.gemini import GeminiBackend, answer_from_response
    from crome_ray.oracle.protocol import GenerationParams, OracleRequest

    backend = GeminiBackend(OracleConfig(model=MODEL, base_url=base), "k")
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        req = OracleRequest(prompt(i), json_schema=SCHEMA, params=GenerationParams(max_output_tokens=256))
        async with sem:
            if public:
                response = await backend.client.aio.models.generate_content(
                    model=MODEL, contents=req.prompt, config=backend.generation_config(req)
                )
                answer = answer_from_response(response, 0.0)
            else:
                answer = await backend.generate(req)
            parse_json_answer(answer.text, SCHEMA)

    await asyncio.gather(*(one(-1 - i) for i in range(c)))
    t = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    used = time.process_time() - t
    await backend.aclose()
    return used


async def run_client(base: str, n: int, c: int) -> float:
    from crome_ray.config import load_config
    from crome_ray.oracle.cache import ResponseCache
    from crome_ray.oracle.client import OracleClient
    from crome_ray.oracle.config import OracleConfig
    from crome_ray.oracle.gemini import GeminiBackend
    from crome_ray.oracle.governor import LocalGovernor
    from crome_ray.oracle.governor_core import GovernorCore
    from crome_ray.oracle.protocol import GenerationParams, OracleRequest

    cfg = load_config(
        OracleConfig,
        None,
        [
            f"base_url={base}",
            f"model={MODEL}",
            f"quota.max_in_flight={c}",
            "quota.rpm=10000000",
            "quota.input_tpm=1000000000",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(tmp, "gemini", MODEL)
        backend = GeminiBackend(cfg, "k")
        client = OracleClient(cfg, backend, LocalGovernor(GovernorCore(cfg)), cache)
        reqs = [OracleRequest(prompt(i), json_schema=SCHEMA, params=GenerationParams(max_output_tokens=256))
                for i in range(-c, n)]  # fmt: skip
        await client.call_many(reqs[:c])
        t = time.process_time()
        await client.call_many(reqs[c:])
        used = time.process_time() - t
        await backend.aclose()
        return used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--port", type=int, default=8797)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "crome_ray.cli", "oracle", "sim", "--port", str(args.port)]
    sim = subprocess.Popen(
        [*command, "--latency", "0.02"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/_sim/stats", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        sides = {
            "raw aiohttp": lambda: run_raw(base, args.calls, args.concurrency),
            "google-genai generate_content": lambda: run_backend(base, args.calls, args.concurrency, True),
            "crome-ray backend": lambda: run_backend(base, args.calls, args.concurrency, False),
            "crome-ray client": lambda: run_client(base, args.calls, args.concurrency),
        }
        results = {name: round(asyncio.run(fn()) / args.calls * 1000, 3) for name, fn in sides.items()}
    finally:
        sim.terminate()
        sim.wait(10)
    base_ms = results["raw aiohttp"]
    line = {
        "bench": "oracle_client_floor",
        "calls": args.calls,
        "concurrency": args.concurrency,
        "cpu_ms_per_call": results,
        "ratio_vs_raw": {k: round(v / base_ms, 2) for k, v in results.items()},
    }
    print(json.dumps(line))
    print(f"\n{'side':>32} {'CPU ms/call':>12} {'vs raw':>7}")
    for k, v in results.items():
        print(f"{k:>32} {v:>12.3f} {v / base_ms:>7.2f}")


if __name__ == "__main__":
    main()
