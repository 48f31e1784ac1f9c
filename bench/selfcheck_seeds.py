"""The planted-attribute self-check over training seeds: baseline, Crome as configured and the
positive control, each trained with seeds 0, 1, 2 on the same planted pairs.

Run as (the demo's config; any overrides after ``--``):
    .venv/bin/python bench/selfcheck_seeds.py         # seeds 0,1,2, runs under /tmp/selfcheck-seeds
    .venv/bin/python bench/selfcheck_seeds.py --seeds 0,1 -- augment.oracle_examples=0

One `crome-ray selfcheck -c jobs/configs/pipeline_demo.yaml --seeds S`: the ingest, the planting
and the augmentation (which do not depend on the training seed) are made once; each RM is
trained once per seed and the evaluation scores all of them (``evaluate.seeds``).

Within a seed, each figure has the evaluation's 95% interval (bootstrap over prompts). Across
seeds, the table gives the mean, the spread (standard deviation) and a t-interval of the seed
means (2 degrees of freedom for 3 seeds: wide, and honest about it); the share of the baseline's
shift each model removes is computed per seed (against the baseline of the same seed). Prints
one JSON line (every setting and every seed's figures), then the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("baseline", "crome", "control")
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seed_interval(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, standard deviation and the 95% t-interval of the mean over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0, math.nan, math.nan
    sd = statistics.stdev(values)
    half = T975.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def run(seeds: list[int], root: str, overrides: list[str]) -> tuple[dict, dict, float]:
    from crome_ray.storage import RunFolder

    cmd = [str(REPO / ".venv" / "bin" / "crome-ray"), "selfcheck", "-c", "jobs/configs/pipeline_demo.yaml",
           "--output", root, "--seeds", ",".join(map(str, seeds)), "run_name=selfcheck-seeds",
           *overrides]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the self-check failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    pipeline = RunFolder.from_uri(f"{root}/pipeline/selfcheck-seeds").manifest()["details"]
    steps = {s["name"]: s for s in pipeline["steps"]}
    evaluation = RunFolder.from_uri(steps["evaluate"]["uri"])
    report = json.loads(evaluation.committed().fs.open(evaluation.committed().file("report.json")).read())
    return pipeline, report, seconds


def per_seed(report: dict, seeds: list[int]) -> list[dict]:
    """Each seed's figures: each model's shift, accuracy with the attribute on the rejected answer
    and clean accuracy, with their intervals."""
    out = []
    for i, seed in enumerate(seeds):
        row: dict = {"seed": seed}
        for label in MODELS:
            m = report["models"][label] if i == 0 else report["seed_models"][f"{label}@seed{seed}"]
            iv = m["intervals"]
            row[label] = {"shift": iv["cue_shift_in_spread"], "on_rejected": iv["accuracy_cue_on_rejected"],
                          "clean": iv["overall"]}  # fmt: skip
        for label in ("crome", "control"):
            base = row["baseline"]["shift"]["value"]
            row[f"removed_by_{label}"] = 1 - row[label]["shift"]["value"] / base if base > 0 else None
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default="/tmp/selfcheck-seeds")
    ap.add_argument("overrides", nargs="*", help="pipeline overrides, after --")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    pipeline, report, seconds = run(seeds, args.root, args.overrides)
    runs = per_seed(report, seeds)
    rows = []
    for what, get in (
        ("attribute shift (spreads)", lambda r, m: r[m]["shift"]["value"]),
        ("accuracy, attribute on rejected", lambda r, m: r[m]["on_rejected"]["value"]),
        ("clean accuracy (all pairs)", lambda r, m: r[m]["clean"]["value"]),
    ):
        for m in MODELS:
            rows.append((what, m, seed_interval([get(r, m) for r in runs])))
    for m in ("crome", "control"):
        shares = [r[f"removed_by_{m}"] for r in runs if r[f"removed_by_{m}"] is not None]
        if shares:
            rows.append(("share of the baseline's shift removed", m, seed_interval(shares)))
    between = report["seeds"]["between_models"]["models"]
    verdict = pipeline["selfcheck"]
    keys = ("learned", "removed_by_control", "removed_by_crome", "control_distinguishable",
            "crome_distinguishable", "crome_of_control", "lines")  # fmt: skip
    doc = {
        "bench": "selfcheck_seeds",
        "config": "jobs/configs/pipeline_demo.yaml",
        "overrides": args.overrides,
        "seeds": seeds,
        "root": args.root,
        "runs": runs,
        "across_seeds": [{"what": w, "model": m, "mean": a, "sd": b, "low": c, "high": d}
                         for w, m, (a, b, c, d) in rows],
        "between_models_on_seed_means": {m: between[m]["cue_shift_in_spread"] for m in ("crome", "control")},
        "largest_reseed": {m: report["seeds"]["between_seeds"][m]["largest"]["cue_shift_in_spread"]
                           for m in MODELS if m in report["seeds"]["between_seeds"]},
        "verdict": {k: verdict[k] for k in keys},
        "steps_s": {s["name"]: s["seconds"] for s in pipeline["steps"]},
        "seconds": round(seconds, 1),
    }  # fmt: skip
    print(json.dumps(doc))
    print(f"\n{'what':<40} {'model':<9} {'mean':>8} {'sd':>7}   95% over seeds")
    for w, m, (mean, sd, lo, hi) in rows:
        print(f"{w:<40} {m:<9} {mean:>8.3f} {sd:>7.3f}   [{lo:.3f}, {hi:.3f}]")
    print("\nper seed (within-seed 95% intervals):")
    for r in runs:
        cells = "; ".join(
            f"{m} shift {x['value']:.2f} [{x['low']:.2f}, {x['high']:.2f}]"
            for m in MODELS
            if (x := r[m]["shift"])
        )
        print(f"  seed {r['seed']}: {cells}")
    print("\non the seed means (paired over the same pairs) against the largest reseed:")
    for m in ("crome", "control"):
        d = between[m]["cue_shift_in_spread"]
        print(f"  {m} − baseline: {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] p={d['p_value']:.3f}")
    for m, d in doc["largest_reseed"].items():
        if d:
            span = f"{d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
            print(f"  {m}, seed to seed: {span} ({d['seeds']})")
    print("\nverdict:\n  " + "\n  ".join(verdict["lines"]))
    print(f"\n{seconds:.0f} s")


if __name__ == "__main__":
    main()
