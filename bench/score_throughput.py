"""The evaluation's scorer against a plain transformers loop: the same reward model, the same
(prompt, answer) texts, the same batch size and threads, in one run.

Run as:
    .venv/bin/python bench/score_throughput.py                       # MiniLM, 400 texts, 512 tokens
    .venv/bin/python bench/score_throughput.py --texts 200 --max-length 256

The texts: both answers of the first ``--texts``/2 pairs of the UltraFeedback eval sample (real
lengths: most answers run past 256 tokens). The model: all-MiniLM-L6-v2 with a reward head
(saved once with a seeded random head: the weights decide nothing about the speed).

- side ``plain``: the loop a user would write: the texts in file order, ``--batch-size`` at a
  time, the tokenizer pads and truncates each batch to ``--max-length``, one forward pass
  under ``torch.no_grad``; ``torch.set_num_threads(--threads)``. Nothing else.
- side ``ray``: ``crome_ray.evaluate.scoring.score_on_ray``: one Ray Data actor with
  ``--threads`` threads, the texts sorted by length and cut into blocks, the same batch size;
  its wall time includes the actor's start (the model load), which ``plain`` also pays.

Each side runs in a process of its own, one after the other (2 cores: never both at once).
Prints one JSON line (every setting, both sides' texts/s and the ratio ray/plain) and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sides import run_side  # noqa: E402

SAMPLE = REPO / "data" / "samples" / "ultrafeedback" / "eval_200.jsonl"


def texts(n: int) -> list[tuple[str, str]]:
    rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    out = [(r["prompt"], a) for r in rows for a in (r["chosen"], r["rejected"])]
    return out[:n]


def reward_model(folder: Path) -> Path:
    """MiniLM with a one-output head, saved once (seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from crome_ray.models import resolve_model

    if (folder / "config.json").exists():
        return folder
    base = resolve_model("minilm")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(folder)
    return folder


def side_plain(model: Path, items: list[tuple[str, str]], a: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(model))
    net = AutoModelForSequenceClassification.from_pretrained(str(model)).eval()
    scores: list[float] = []
    with torch.no_grad():
        for i in range(0, len(items), a.batch_size):
            chunk = items[i : i + a.batch_size]
            enc = tok(
                [p for p, _ in chunk],
                [r for _, r in chunk],
                truncation="longest_first",
                max_length=a.max_length,
                padding=True,
                return_tensors="pt",
            )
            scores += net(**enc).logits.squeeze(-1).tolist()
    return {"seconds": time.perf_counter() - started, "scored": len(scores)}


def side_ray(model: Path, items: list[tuple[str, str]], a: argparse.Namespace) -> dict:
    import ray

    from crome_ray.config import StorageConfig
    from crome_ray.evaluate.config import ScoringSettings
    from crome_ray.evaluate.scoring import score_on_ray
    from crome_ray.ray_runtime import connect

    connect(num_cpus=2)
    keyed = {f"{i:06d}": t for i, t in enumerate(items)}
    settings = ScoringSettings(workers=1, cpus=a.threads, batch_size=a.batch_size, max_length=a.max_length)
    started = time.perf_counter()
    scores = score_on_ray(str(model), keyed, settings, StorageConfig())
    seconds = time.perf_counter() - started
    ray.shutdown()
    return {"seconds": seconds, "scored": len(scores)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=400)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--side", choices=["plain", "ray"])
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "crome-bench-minilm-rm"))
    a = p.parse_args()
    model = reward_model(Path(a.model_dir))
    items = texts(a.texts)
    if a.side:
        out = (side_plain if a.side == "plain" else side_ray)(model, items, a)
        print("RESULT " + json.dumps(out))
        return
    passed = ("texts", "max_length", "batch_size", "threads", "model_dir")
    results = {s: run_side(__file__, s, a, passed) for s in ("plain", "ray")}
    for r in results.values():
        if "seconds" in r:
            r["texts_per_s"] = round(r["scored"] / r["seconds"], 2)
            r["seconds"] = round(r["seconds"], 2)
    ok = all("texts_per_s" in r for r in results.values())
    line = {
        "bench": "score_throughput",
        "model": "all-MiniLM-L6-v2 + reward head",
        "texts": len(items),
        "max_length": a.max_length,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "sides": results,
        "ratio_ray_over_plain": round(results["ray"]["texts_per_s"] / results["plain"]["texts_per_s"], 3)
        if ok
        else None,
    }
    print(json.dumps(line))
    print(f"\n{'side':<7} {'texts':>6} {'s':>8} {'texts/s':>8}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<7} error: {r['error'][-300:]}")
        else:
            print(f"{name:<7} {r['scored']:>6} {r['seconds']:>8.1f} {r['texts_per_s']:>8.2f}")
    if ok:
        print(f"ray / plain: {line['ratio_ray_over_plain']:.2f}×")


if __name__ == "__main__":
    main()
