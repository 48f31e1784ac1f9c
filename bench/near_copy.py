"""The near-copy check's similarity: difflib's ratio against rapidfuzz's Indel similarity.

Run as:  .venv/bin/python bench/near_copy.py [--pairs 50]

Both sides score the same (source, rewrite) pairs: the UltraFeedback sample's first
``--pairs`` chosen answers against a rewrite made by changing two words (a counterfactual's
size), on the first 4,000 characters as the product does. Prints a JSON line (ms per pair,
the ratio, and the largest difference between the two scores) and a short table.
"""

from __future__ import annotations

import argparse
import difflib
import json
import time
from pathlib import Path

from rapidfuzz.distance import Indel

REPO = Path(__file__).resolve().parents[1]
CHARS = 4000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50)
    n = ap.parse_args().pairs
    rows = [
        json.loads(x) for x in (REPO / "data/samples/ultrafeedback/train_1k.jsonl").read_text().splitlines()
    ]
    pairs = [(r["chosen"][:CHARS], r["chosen"].replace(" the ", " a ", 2)[:CHARS]) for r in rows[:n]]
    sides = {
        "difflib": lambda a, b: difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(),
        "rapidfuzz": lambda a, b: Indel.normalized_similarity(a, b),
    }
    ms, scores = {}, {}
    for name, f in sides.items():
        started = time.perf_counter()
        scores[name] = [f(a, b) for a, b in pairs]
        ms[name] = round((time.perf_counter() - started) / len(pairs) * 1000, 4)
    diff = max(abs(x - y) for x, y in zip(scores["difflib"], scores["rapidfuzz"], strict=True))
    mean_chars = round(sum(len(a) for a, _ in pairs) / len(pairs))
    ratio = round(ms["rapidfuzz"] / ms["difflib"], 6)
    print(
        json.dumps(
            {
                "bench": "near_copy",
                "pairs": len(pairs),
                "chars_cap": CHARS,
                "mean_chars": mean_chars,
                "ms_per_pair": ms,
                "ratio_rapidfuzz_vs_difflib": ratio,
                "max_score_difference": round(diff, 6),
            }
        )
    )
    print(f"\n{'side':<10} {'ms per pair':>12}")
    for name, v in ms.items():
        print(f"{name:<10} {v:>12}")
    print(f"rapidfuzz / difflib: {ratio}; largest score difference {diff:.6f}")


if __name__ == "__main__":
    main()
