"""The planted-attribute self-check over training seeds: baseline, Crome as configured and the
positive control, each trained with seeds 0, 1, 2 on the same planted pairs.

Run as (the demo's config; any overrides after ``--``):
    .venv/bin/python bench/selfcheck_seeds.py         # seeds 0,1,2, runs under /tmp/selfcheck-seeds
    .venv/bin/python bench/selfcheck_seeds.py --seeds 0,1 -- augment.oracle_examples=0

Each seed is one `crome-ray selfcheck -c jobs/configs/pipeline_demo.yaml` with ``baseline.seed``
and ``crome.seed`` set (the control trains with the Crome config, so with its seed), its
pipeline run named ``selfcheck-s<seed>``, every seed under one storage root: the ingest,
the planting and the augmentation (which do not depend on the training seed) are made once and
found by the other seeds; each seed trains its three RMs and evaluates them.

Within a seed, each figure has the evaluation's 95% interval (bootstrap over prompts) and each
model's difference from the baseline its paired interval. Across seeds, the table gives the
mean, the spread (standard deviation) and a t-interval of the seed means (2 degrees of freedom
for 3 seeds: wide, and honest about it). Prints one JSON line (every setting and every seed's
figures), then the table.
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


def run_seed(seed: int, root: str, overrides: list[str]) -> dict:
    from crome_ray.storage import RunFolder

    cmd = [str(REPO / ".venv" / "bin" / "crome-ray"), "selfcheck", "-c", "jobs/configs/pipeline_demo.yaml",
           "--output", root, f"run_name=selfcheck-s{seed}", f"baseline.seed={seed}", f"crome.seed={seed}",
           *overrides]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    pipeline = RunFolder.from_uri(f"{root}/pipeline/selfcheck-s{seed}").manifest()["details"]
    steps = {s["name"]: s for s in pipeline["steps"]}
    evaluation = RunFolder.from_uri(steps["evaluate"]["uri"]).manifest()["details"]
    out: dict = {
        "seed": seed,
        "seconds": round(seconds, 1),
        "steps_s": {k: s["seconds"] for k, s in steps.items()},
    }
    for label in MODELS:
        iv = evaluation["models"][label]["intervals"]
        out[label] = {
            "shift": iv["cue_shift_in_spread"],
            "on_rejected": iv["accuracy_cue_on_rejected"],
            "clean": iv["overall"],
        }
    for label in ("crome", "control"):
        d = evaluation["differences"]["models"][label]
        out[f"{label}_minus_baseline"] = {"shift": d["cue_shift_in_spread"], "clean": d["overall"]}
    verdict = pipeline["selfcheck"]
    keys = ("learned", "removed_by_control", "removed_by_crome", "control_distinguishable",
            "crome_distinguishable", "crome_of_control")  # fmt: skip
    out["verdict"] = {k: verdict[k] for k in keys}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--root", default="/tmp/selfcheck-seeds")
    ap.add_argument("overrides", nargs="*", help="pipeline overrides, after --")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    runs = [run_seed(s, args.root, args.overrides) for s in seeds]
    rows = []
    for what, get in (
        ("attribute shift (spreads)", lambda r, m: r[m]["shift"]["value"]),
        ("accuracy, attribute on rejected", lambda r, m: r[m]["on_rejected"]["value"]),
        ("clean accuracy (all pairs)", lambda r, m: r[m]["clean"]["value"]),
    ):
        for m in MODELS:
            rows.append((what, m, seed_interval([get(r, m) for r in runs])))
    for m in ("crome", "control"):
        rows.append(("shift minus the baseline's", m,
                     seed_interval([r[f"{m}_minus_baseline"]["shift"]["value"] for r in runs])))  # fmt: skip
        rows.append(("share of the baseline's shift removed", m,
                     seed_interval([r["verdict"][f"removed_by_{m}"] for r in runs])))  # fmt: skip
    doc = {
        "bench": "selfcheck_seeds",
        "config": "jobs/configs/pipeline_demo.yaml",
        "overrides": args.overrides,
        "seeds": seeds,
        "root": args.root,
        "runs": runs,
        "across_seeds": [{"what": w, "model": m, "mean": a, "sd": b, "low": c, "high": d}
                         for w, m, (a, b, c, d) in rows],
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    print(json.dumps(doc))
    print(f"\n{'what':<40} {'model':<9} {'mean':>8} {'sd':>7}   95% over seeds")
    for w, m, (mean, sd, lo, hi) in rows:
        print(f"{w:<40} {m:<9} {mean:>8.3f} {sd:>7.3f}   [{lo:.3f}, {hi:.3f}]")
    print("\nper seed (within-seed 95% intervals):")
    for r in runs:
        cells = "; ".join(
            f"{m} shift {r[m]['shift']['value']:.2f} "
            f"[{r[m]['shift']['low']:.2f}, {r[m]['shift']['high']:.2f}]"
            for m in MODELS
        )
        print(f"  seed {r['seed']} ({r['seconds']:.0f} s): {cells}")
        for m in ("crome", "control"):
            d = r[f"{m}_minus_baseline"]["shift"]
            mark = "distinguishable" if d["distinguishable"] else "not distinguishable"
            print(
                f"    {m} − baseline: {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] "
                f"p={d['p_value']:.3f} ({mark})"
            )


if __name__ == "__main__":
    main()
