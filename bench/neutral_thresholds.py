"""Where the neutral rewrites' meaning checks draw their lines: MiniLM cosine and unigram F1 on
real answers, for text that should pass and text that must not.

Run as:
    .venv/bin/python bench/neutral_thresholds.py               # 300 UltraFeedback pairs
    .venv/bin/python bench/neutral_thresholds.py --examples 1000

A CAN rewrite carries ANSWER A's content, and a PARA rewrite is A in other words, so either
should be at least as close to A as another answer to the same request. The real texts at
hand (the UltraFeedback sample, ``data/samples/ultrafeedback/train_1k.jsonl``) give:

- ``same_request``: A against B, two models' answers to one request (the floor a real neutral
  rewrite should clear: it shares the request's topic and is asked to share A's content too);
- ``other_request``: A against an answer to another request, the least alike of ``--draws``
  drawn (what IQN would pick; a neutral must fail it);
- ``other_random``: A against an answer to a request drawn at random (a neutral must fail it);
- ``placeholder``: A against the placeholder words and comments small local oracles wrote
  (``tests/fixtures/junk_rewrites.jsonl``, their B).

The embedder is the augmentation's own (``minilm``, 128 tokens, mean-pooled, unit vectors).
Prints one JSON line (every setting, each group's percentiles, and the share of each group a
threshold keeps), then a short table.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--draws", type=int, default=16, help="other answers drawn per example for other_request")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6", help="cosines to report the kept share at")
    ap.add_argument("--f1-thresholds", default="0.1,0.15,0.2,0.25")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from crome_ray.augment.embed import Embedder
    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK
    from crome_ray.models import resolve_model
    from crome_ray.text_similarity import unigram_f1

    with open(REPO / SAMPLE_ULTRAFEEDBACK) as f:
        rows = [json.loads(line) for line in f][: args.examples]
    with open(REPO / "tests" / "fixtures" / "junk_rewrites.jsonl") as f:
        junk = [json.loads(line)["rewrite"] for line in f]
    rng = random.Random(args.seed)
    started = time.monotonic()
    embed = Embedder(resolve_model("minilm"))
    chosen = embed([r["chosen"] for r in rows])
    rejected = embed([r["rejected"] for r in rows])
    junk_vecs = embed(junk)
    names = ("same_request", "other_request", "other_random", "placeholder")
    groups: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    n = len(rows)
    for i, r in enumerate(rows):
        a = r["chosen"]
        groups["same_request"].append((float(chosen[i] @ rejected[i]), unigram_f1(a, r["rejected"])))
        others = [j for j in rng.sample(range(n), min(args.draws + 1, n)) if j != i][: args.draws]
        j = min(others, key=lambda j: float(chosen[i] @ chosen[j]))
        groups["other_request"].append((float(chosen[i] @ chosen[j]), unigram_f1(a, rows[j]["chosen"])))
        k = others[0]
        groups["other_random"].append((float(chosen[i] @ chosen[k]), unigram_f1(a, rows[k]["chosen"])))
        m = rng.randrange(len(junk))
        groups["placeholder"].append((float(chosen[i] @ junk_vecs[m]), unigram_f1(a, junk[m])))
    cos_t = [float(x) for x in args.thresholds.split(",")]
    f1_t = [float(x) for x in args.f1_thresholds.split(",")]
    summary = {}
    for name, values in groups.items():
        cos = np.array([c for c, _ in values])
        f1 = np.array([f for _, f in values])
        summary[name] = {
            "n": len(values),
            "cosine": {f"p{int(q * 100)}": round(float(np.quantile(cos, q)), 3) for q in QUANTILES},
            "f1": {f"p{int(q * 100)}": round(float(np.quantile(f1, q)), 3) for q in QUANTILES},
            "kept_at_cosine": {str(t): round(float((cos >= t).mean()), 3) for t in cos_t},
            "kept_at_f1": {str(t): round(float((f1 >= t).mean()), 3) for t in f1_t},
        }
    line = {
        "bench": "neutral_thresholds",
        "examples": n,
        "draws": args.draws,
        "seed": args.seed,
        "embedder": "minilm (all-MiniLM-L6-v2), 128 tokens, mean-pooled",
        "junk_texts": len(junk),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "seconds": round(time.monotonic() - started, 1),
        "groups": summary,
    }
    print(json.dumps(line))
    print(
        f"\n{'group':<14} {'cos p5':>7} {'cos p50':>8} {'cos p95':>8} "
        f"{'f1 p5':>7} {'f1 p50':>7} {'f1 p95':>7}"
    )
    for name, s in summary.items():
        c, f = s["cosine"], s["f1"]
        print(f"{name:<14} {c['p5']:>7} {c['p50']:>8} {c['p95']:>8} {f['p5']:>7} {f['p50']:>7} {f['p95']:>7}")
    print("\nkept share at each cosine threshold:")
    for name, s in summary.items():
        print(f"  {name:<14} " + "  ".join(f"{t}: {v:.1%}" for t, v in s["kept_at_cosine"].items()))
    print("kept share at each unigram-F1 threshold:")
    for name, s in summary.items():
        print(f"  {name:<14} " + "  ".join(f"{t}: {v:.1%}" for t, v in s["kept_at_f1"].items()))


if __name__ == "__main__":
    main()
