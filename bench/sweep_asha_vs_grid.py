"""The λ sweep with ASHA against the exhaustive grid: the same λ values, seeds, data and
training, in one run; the wall time of each and whether both pick the same λ.

Run as:
    .venv/bin/python bench/sweep_asha_vs_grid.py                 # 5 λ × 1 seed, MiniLM, 40 steps
    .venv/bin/python bench/sweep_asha_vs_grid.py --lambdas 0,1,4 --steps 20
    .venv/bin/python bench/sweep_asha_vs_grid.py --cue default --metric eval_loss_bt --mode min \
        --lambdas 1,0,3,0.1,0.3 --steps 180 --eval-every 15 --eval-limit 100 --pairs 1000 --max-length 96 \
        [--grace-period 2]                                       # docs/benchmarks.md's 4th/5th runs

``--lambdas`` is also the order the trials start, which ASHA's savings depend on (it judges a
trial only against those that reached the rung before it); both sides get the same order.

The data: the UltraFeedback sample's first ``--pairs`` pairs with their IQN ties (an IQN-only
augmentation: no oracle call), the eval sample as the validation set. Each trial: MiniLM, full
fine-tuning, ``--steps`` steps on one Ray Train worker, an evaluation every ``--eval-every``
steps (ASHA's rungs). The metric: ``--metric``/``--mode``, by default the validation
Bradley–Terry loss (min). ``grid_metric_spread`` (the best final metric of the grid's trials
less the worst) says whether λ mattered at all at these settings: at 0, every λ ties and the
best λ is the tie-break's.

``--cue`` makes λ matter, the way the paper's premise says it should: a spurious attribute. The
cue (``--cue default``: the evaluation's planted-cue text, a "## Summary" block) is planted on
every training pair's chosen answer, so it predicts the label perfectly; the IQN ties the
augmentation makes from those pairs (the same two answers under an unrelated request, labelled
tie) carry it too. It goes before the answer (``--cue-position start``), where truncation to
``--max-length`` tokens keeps it. The validation set plants it on the rejected answer instead (the planted-cue
probe of ``crome-ray evaluate``): a model that learned the cue scores below chance there, and
the tie loss, weighted by λ, is what should keep it from learning it.

The sides run one after the other, each a ``crome_ray.tune.run_tune_job`` against one local
Ray cluster with the dashboard (the state API ASHA needs); the data and its ingest are made
once, before both, and each side tokenizes in its own driver as users' runs do. Prints one
JSON line (every setting, both sides' seconds, trials' outcomes and each trial's metric at every
evaluation, best λ, the ratio asha/grid) and a table.
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

TRAIN = REPO / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
EVAL = REPO / "data" / "samples" / "ultrafeedback" / "eval_200.jsonl"


def planted(source: Path, folder: Path, side: str, cue: str, position: str) -> Path:
    """A copy of a sample file with ``cue`` planted on one side of every pair."""
    from crome_ray.cue import plant_cue

    out = folder / f"{source.stem}-cue-{side}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for line in source.read_text().splitlines():
            row = json.loads(line)
            row[side] = plant_cue(row[side], cue, position)
            f.write(json.dumps(row) + "\n")
    return out


def histories(attempt, metric: str) -> dict[str, list[float]]:
    """Each trial's metric at every evaluation Tune received ("λ/seed" → values in step order),
    from the trials' ``progress.csv`` in the sweep run's Tune folder: what ASHA judged at each
    rung."""
    import csv

    out = {}
    for progress in sorted(attempt.fs.glob(attempt.file("tune", "*", "progress.csv"))):
        with attempt.fs.open(progress.rsplit("/", 1)[0] + "/params.json") as f:
            train = json.loads(json.load(f)["train"])
        with attempt.fs.open(progress, "r") as f:
            values = [round(float(r[metric]), 4) for r in csv.DictReader(f) if r.get(metric)]
        out[(train["loss"]["tie_weight"], train["seed"])] = values
    return {f"{lam:g}/{seed}": v for (lam, seed), v in sorted(out.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lambdas", default="0,0.1,0.3,1,3")
    p.add_argument("--seeds", default="0")
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: evaluations before a stop")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--metric", default="eval_loss_bt", help="what ASHA and the best pick judge on")
    p.add_argument("--mode", default="min", choices=("min", "max"))
    p.add_argument(
        "--cue",
        default=None,
        help="text (or 'default') planted on training pairs' chosen, validation's rejected",
    )
    p.add_argument(
        "--cue-position", default="start", choices=("start", "end"), help="start: kept by truncation"
    )
    p.add_argument("--root", default=None)
    a = p.parse_args()

    import ray

    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import run_augment_job
    from crome_ray.config import StorageConfig
    from crome_ray.ray_runtime import connect
    from crome_ray.train.config import TrainConfig
    from crome_ray.tune.config import SweepSettings, TuneConfig
    from crome_ray.tune.job import run_tune_job

    root = a.root or tempfile.mkdtemp(prefix="crome-bench-sweep-")
    train_file, eval_file = TRAIN, EVAL
    if a.cue:
        from crome_ray.evaluate.config import DEFAULT_CUE

        cue = DEFAULT_CUE if a.cue == "default" else a.cue
        train_file, eval_file = (
            planted(TRAIN, Path(root), "chosen", cue, a.cue_position),
            planted(EVAL, Path(root), "rejected", cue, a.cue_position),
        )
    storage = StorageConfig(root=root)
    lambdas = [float(x) for x in a.lambdas.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    connect(num_cpus=2, dashboard=True)
    from pydantic import SecretStr

    iqn = AugmentConfig.model_validate(
        {"input": str(train_file), "limit": a.pairs, "leakage_embeddings": False,
         "storage": storage.model_dump(),
         "tasks": {"causal": False, "elements": False, "verify": False, "can": False, "para": False}}
    )  # fmt: skip
    data = run_augment_job(iqn, SecretStr(""), log=lambda _: None).run.uri
    train = TrainConfig(
        model="minilm", finetune="full", train_data=data, eval_data=str(eval_file), eval_limit=a.eval_limit,
        max_length=a.max_length, batch_size=a.batch_size, max_steps=a.steps, eval_every=a.eval_every,
        optim={"lr": a.lr}, scaling={"workers": 1, "cpus_per_worker": 1.0}, storage=storage,
    )  # fmt: skip
    results = {}
    for side in ("grid", "asha"):
        cfg = TuneConfig(
            run_name=f"bench-{side}",
            train=train,
            sweep=SweepSettings(tie_weights=lambdas, seeds=seeds, metric=a.metric, mode=a.mode,
                                scheduler=side, reduction_factor=a.reduction_factor,
                                grace_period=a.grace_period),
            storage=storage,
        )  # fmt: skip
        started = time.perf_counter()
        result = run_tune_job(cfg, force=True, log=lambda _: None)
        seconds = time.perf_counter() - started
        d = result.manifest["details"]
        trials = result.run.read_table("trials").to_pylist()
        results[side] = {
            "seconds": round(seconds, 1),
            "best_lambda": d["best"]["tie_weight"],
            "best_metric": round(d["best"]["metric"], 4),
            "completed": result.counts["completed"],
            "stopped_early": result.counts["stopped_early"],
            "steps_trained": sum(t["step"] or 0 for t in trials),
            "final": {
                f"{t['tie_weight']:g}/{t['seed']}": t["metric"] and round(t["metric"], 4) for t in trials
            },
            "history": histories(result.run.committed(), a.metric),
        }
    ray.shutdown()
    line = {
        "bench": "sweep_asha_vs_grid",
        "model": "all-MiniLM-L6-v2, full fine-tuning",
        "lambdas": lambdas,
        "seeds": seeds,
        "pairs": a.pairs,
        "steps": a.steps,
        "eval_every": a.eval_every,
        "eval_limit": a.eval_limit,
        "max_length": a.max_length,
        "batch_size": a.batch_size,
        "reduction_factor": a.reduction_factor,
        "grace_period": a.grace_period,
        "lr": a.lr,
        "metric": f"{a.metric} ({a.mode})",
        "cue": a.cue,
        "cue_position": a.cue_position if a.cue else None,
        "sides": results,
        "grid_metric_spread": round(
            max(v for v in results["grid"]["final"].values() if v is not None)
            - min(v for v in results["grid"]["final"].values() if v is not None),
            4,
        ),
        "ratio_asha_over_grid": round(results["asha"]["seconds"] / results["grid"]["seconds"], 3),
        "same_best_lambda": results["asha"]["best_lambda"] == results["grid"]["best_lambda"],
    }
    print(json.dumps(line))
    print(f"\n{'side':<5} {'s':>7} {'best λ':>7} {'metric':>8} {'completed':>9} {'stopped':>7} {'steps':>6}")
    for name, r in results.items():
        print(
            f"{name:<5} {r['seconds']:>7.1f} {r['best_lambda']:>7g} {r['best_metric']:>8.4f} "
            f"{r['completed']:>9} {r['stopped_early']:>7} {r['steps_trained']:>6}"
        )
    print(f"asha / grid: {line['ratio_asha_over_grid']:.2f}×; same best λ: {line['same_best_lambda']}")


if __name__ == "__main__":
    main()
