"""The evaluation job: reward models on RewardBench-style pairs and their transformations,
side by side, into a committed run with a report.

1. find each data set's pairs (a committed ingest run, or a source ingested first);
2. build every variant (each pair as it is, after each transformation that applies, with the
   planted cue) and the distinct texts behind them; with ``rewrites.enabled``, also the
   paraphrase and back-translation of each pair, written by the oracle in committed oracle runs
   before the step begins (``evaluate.oracle_rewrites``): those runs are inputs too;
3. score the texts with each model on Ray Data actors (``evaluate.scoring``);
4. write the ``scores`` table (a row per model, pair and variant), the report (JSON with
   every number, Markdown, plots) and commit. Models that are committed training runs and
   the data runs are the run's inputs: a retrained model makes the evaluation run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from crome_ray.data.config import SourceConfig
from crome_ray.errors import CromeError
from crome_ray.evaluate.benchmarks import benchmark_scores
from crome_ray.evaluate.best_of_n import Candidate, best_of_n, pick, source_picks, xstest_groups
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.evaluate.metrics import PerItem, ScoredVariant, differences, model_metrics, per_item
from crome_ray.evaluate.report import headline, write_report
from crome_ray.evaluate.scoring import score_on_ray
from crome_ray.evaluate.seeds import manifest_seeds, seed_label, seed_report
from crome_ray.evaluate.transforms import TRANSFORMATIONS
from crome_ray.evaluate.variants import EvalPair, Variant, text_key, unique_texts, variants_of
from crome_ray.runs import Step, StepResult
from crome_ray.storage import RunFolder, is_bucket_uri

JOB = "evaluate"

SCORES_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("subset", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("score_chosen", pa.float64(), nullable=False),
        pa.field("score_rejected", pa.float64(), nullable=False),
        pa.field("outcome", pa.float64(), nullable=False),  # 1 right, 0 wrong, 0.5 equal scores
    ],
    metadata={"crome_ray.table": "scores"},
)


BEST_OF_N_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),  # the prompt's id
        pa.field("subset", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the model that wrote the candidate
        pa.field("quality", pa.float64(), nullable=False),  # the reference label, 0..1
        pa.field("score", pa.float64(), nullable=False),
        pa.field("picked", pa.bool_(), nullable=False),
    ],
    metadata={"crome_ray.table": "best_of_n"},
)


REWRITES_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("subset", pa.string(), nullable=False),
        pa.field("transformation", pa.string(), nullable=False),  # paraphrase | back_translation
        pa.field("chosen", pa.string()),  # the rewritten answers; null when skipped
        pa.field("rejected", pa.string()),
        pa.field("skipped", pa.string()),  # why the pair has no variant (null: it has one)
    ],
    metadata={"crome_ray.table": "rewrites"},
)


class EvaluateError(CromeError, RuntimeError):
    """An evaluation that cannot run; the message says why and what to do."""


def run_name(cfg: EvaluateConfig) -> str:
    return cfg.run_name or f"eval-{cfg.fingerprint()}"


def model_labels(cfg: EvaluateConfig) -> list[str]:
    """The models' short names: as configured, else their folder's name (numbered if equal)."""
    if cfg.labels:
        return list(cfg.labels)
    names = [m.rstrip("/").rsplit("/", 1)[-1] or m for m in cfg.models]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


def data_run(src: SourceConfig, cfg: EvaluateConfig, log: Callable[[str], None]) -> RunFolder:
    """The committed run holding a data set's pairs: that run, or a new ingest of the source."""
    from crome_ray.data.inputs import InputError, source_run

    try:
        run = source_run(src, cfg.storage, log)
    except InputError as e:
        raise EvaluateError(str(e)) from None
    if not run.table_files("pairs"):
        raise EvaluateError(f"{src.path} gave no pairs (see {run.uri}'s quarantine)")
    return run


def model_runs(cfg: EvaluateConfig, labels: list[str]) -> dict[str, RunFolder]:
    """Models that are committed training runs, as the run's inputs (lineage)."""
    out = {}
    for label, uri in zip(labels, cfg.models, strict=True):
        if is_bucket_uri(uri) or Path(uri).is_dir():
            run = RunFolder.from_uri(uri, cfg.storage)
            if run.is_committed():
                out[f"model:{label}"] = run
    return out


def read_pairs(run: RunFolder, limit: int | None) -> list[EvalPair]:
    """A data run's preference pairs (tie-labelled pairs are not scored for accuracy)."""
    table = run.read_table("pairs")
    cols = {c: table.column(c).to_pylist() for c in ("pair_id", "prompt", "chosen", "rejected", "label")}
    subsets = table.column("subset").to_pylist()
    sources = table.column("source").to_pylist()
    metadata = table.column("metadata").to_pylist()
    pairs = []
    for i, pair_id in enumerate(cols["pair_id"]):
        if cols["label"][i] != "chosen":
            continue
        pairs.append(
            EvalPair(
                dataset=run.name,
                pair_id=pair_id,
                subset=subsets[i] or sources[i],
                prompt=cols["prompt"][i],
                chosen=cols["chosen"][i],
                rejected=cols["rejected"][i],
                benchmark=metadata[i] if metadata[i] and '"benchmark"' in metadata[i] else None,
            )
        )
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def _progress(label: str, log: Callable[[str], None]) -> Callable[[int, int, float], None]:
    """Prints a model's scoring progress every 5 s, and at the end, with the rate and an ETA."""
    from crome_ray.progress import eta_text

    last = [0.0]

    def show(done: int, total: int, elapsed: float) -> None:
        if time.monotonic() - last[0] > 5 or done == total:
            last[0] = time.monotonic()
            rate = done / max(elapsed, 1e-9)
            log(
                f"  {label}: {done:,}/{total:,} texts scored ({rate:.1f}/s)  {eta_text(done, total, elapsed)}"
            )

    return show


def scores_of(
    label: str, model: str, texts: dict[str, tuple[str, str]], cfg: EvaluateConfig, log: Callable[[str], None]
) -> tuple[dict[str, float], int]:
    """``key -> reward`` of every text with ``model``: from the score cache where it has them
    (``scoring.cache``), the rest scored on Ray (and cached). Also: how many came from the cache."""
    from crome_ray.evaluate.score_cache import ScoreCache, model_identity

    cache = None
    known: dict[str, float] = {}
    if cfg.scoring.cache:
        cache = ScoreCache(
            cfg.storage.root, model_identity(model, cfg.storage, cfg.scoring.max_length), cfg.storage
        )
        known = cache.read(texts)
        if known:
            log(f"  {label}: {len(known):,} of {len(texts):,} texts scored before ({cache.uri})")
    todo = {k: v for k, v in texts.items() if k not in known}
    if not todo:
        return known, len(known)
    try:
        fresh = score_on_ray(model, todo, cfg.scoring, cfg.storage, _progress(label, log))
    except Exception as e:  # the model's own load error, raised in the actor: say which model
        raise EvaluateError(f"scoring with {model} ({label}) failed: {type(e).__name__}: {e}") from e
    if cache is not None:
        cache.write(fresh)
    return {**known, **fresh}, len(known)


def across_seeds(
    labels: list[str],
    seeded: dict[str, Any],
    metrics: dict[str, Any],
    seed_metrics: dict[str, Any],
    items: dict[str, PerItem],
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """The report's seeds section (``evaluate.seeds``): each model over its seeds."""
    runs: dict[str, list[tuple[int | None, dict[str, Any], PerItem]]] = {}
    for label in labels:
        found = seeded.get(label)
        runs[label] = [(found.seeds[0] if found else None, headline(metrics[label]), items[label])]
        for seed in found.seeds[1:] if found else ():
            other = seed_label(label, seed)
            runs[label].append((seed, headline(seed_metrics[other]), items[other]))
    return seed_report(runs, seed=cfg.seed, reps=cfg.bootstrap_reps)


def compare(labels: list[str], items: dict[str, PerItem], seed: int, reps: int) -> dict[str, Any] | None:
    """Each model against the first (the baseline), paired over the same pairs."""
    if len(labels) < 2:
        return None
    first = labels[0]
    return {
        "baseline": first,
        "models": {b: differences(items[first], items[b], seed=seed, reps=reps) for b in labels[1:]},
    }


def seeded_models(cfg: EvaluateConfig, labels: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """With ``seeds``: each model's runs per seed (``train.seeds``; trained here unless committed),
    label -> ``Seeded``, or None for a model that is not a committed training run (one seed)."""
    if not cfg.seeds:
        return {}
    from crome_ray.train.seeds import train_seeds

    out: dict[str, Any] = {}
    for label, uri in zip(labels, cfg.models, strict=True):
        try:
            out[label] = train_seeds(uri, cfg.seeds, cfg.storage, log)
        except CromeError as e:
            raise EvaluateError(f"training {label} ({uri}) with another seed failed: {e}") from e
        if out[label] is None:
            log(f"{label}: not a committed training run, so one seed (its own)")
    return out


def check_models(cfg: EvaluateConfig) -> None:
    """A model given as a local path must be there (before any data is read or actor started)."""
    for uri in cfg.models:
        if uri.startswith(("/", "./", "../", "~")) and not Path(uri).expanduser().exists():
            raise EvaluateError(f"model {uri} does not exist")


def run_evaluate_job(
    cfg: EvaluateConfig,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    api_key: SecretStr | None = None,
    fallback_key: SecretStr | None = None,
) -> StepResult:
    """``api_key`` / ``fallback_key``: the rewrites' oracle keys (``rewrites.enabled`` only; the
    entrypoint reads them from the environment)."""
    check_models(cfg)
    labels = model_labels(cfg)
    rw = cfg.rewrites
    remote = rw.enabled and rw.fallback.policy != "local_only" and not rw.oracle.local
    if remote and api_key is None:
        raise EvaluateError(
            f"rewrites.enabled needs the oracle's key (from {' / '.join(rw.oracle.api_key_env)}, which "
            "the command reads), or rewrites.fallback.policy=local_only for the local oracle"
        )
    data = [data_run(src, cfg, log) for src in cfg.data]
    inputs: dict[str, RunFolder] = {f"data:{run.name}": run for run in data}
    if len(inputs) != len(data):
        raise EvaluateError(f"two data sets share a run name: {[r.uri for r in data]}")
    inputs.update(model_runs(cfg, labels))
    seeded = seeded_models(cfg, labels, log)
    extra_models: list[tuple[str, str]] = []  # (label, uri) of the models' runs at other seeds
    for label, runs in seeded.items():
        for seed, uri in zip(runs.seeds[1:], runs.uris[1:], strict=True) if runs else ():
            other = seed_label(label, seed)
            extra_models.append((other, uri))
            inputs[f"model:{other}"] = RunFolder.from_uri(uri, cfg.storage)
    pairs: dict[str, list[EvalPair]] | None = None
    rewritten = None
    if rw.enabled:
        # a run committed by another config is refused here, before anything is spent on the oracle
        Step(JOB, run_name(cfg), cfg, inputs=inputs, force=force).begin()
        from crome_ray.evaluate.oracle_rewrites import rewrite_pairs

        pairs = {run.name: read_pairs(run, cfg.limit) for run in data}
        rewritten = rewrite_pairs(
            rw, cfg.storage, run_name(cfg), pairs, api_key or SecretStr(""), fallback_key, log
        )
        inputs.update(rewritten.runs)
    step = Step(JOB, run_name(cfg), cfg, inputs=inputs, force=force)
    if not step.begin():
        log(f"{step.run.uri} is committed by this config and these inputs: nothing to do")
        return step.result  # type: ignore[return-value]
    if step.note:
        log(step.note)

    started = time.monotonic()
    if pairs is None:
        pairs = {run.name: read_pairs(run, cfg.limit) for run in data}
    transformations = [TRANSFORMATIONS[n] for n in cfg.transformations]
    cue = cfg.cue.text if cfg.cue.enabled else None
    variants: list[Variant] = [
        v
        for ps in pairs.values()
        for p in ps
        for v in variants_of(p, transformations, seed=cfg.seed, cue=cue, cue_position=cfg.cue.position)
    ]
    if rewritten is not None:
        variants += rewritten.variants
        rewrites_table = step.table("rewrites", REWRITES_SCHEMA)
        for row in rewritten.rows:
            rewrites_table.add(row)
    texts = unique_texts(variants)
    bon = cfg.best_of_n
    groups: dict[str, list[Candidate]] = (
        xstest_groups(bon.path, cfg.storage, bon.limit or cfg.limit) if bon.enabled else {}
    )
    if bon.enabled and not groups:
        raise EvaluateError(f"best_of_n.path {bon.path} gave no prompts with two or more labelled answers")
    for cands in groups.values():
        for c in cands:
            texts.setdefault(text_key(c.prompt, c.response), (c.prompt, c.response))
    n_pairs = sum(len(ps) for ps in pairs.values())
    log(
        f"{n_pairs:,} pairs from {len(data)} data set(s); {len(variants):,} variants "
        f"({len(transformations)} transformations{', the cue' if cue else ''}"
        f"{', ' + ' and '.join(rw.transformations) + ' by the oracle' if rewritten else ''}); "
        f"{len(texts):,} distinct texts to score with {len(labels)} model(s)"
    )
    scores_table = step.table("scores", SCORES_SCHEMA)
    bon_table = step.table("best_of_n", BEST_OF_N_SCHEMA) if groups else None
    references: dict[str, dict[str, Candidate]] = {}
    if groups and bon.reference_source:
        references[f"source {bon.reference_source}"] = source_picks(groups, bon.reference_source)
    metrics: dict[str, Any] = {}
    items: dict[str, PerItem] = {}
    seconds: dict[str, float] = {}
    cached: dict[str, int] = {}
    prompt_of = {(p.dataset, p.pair_id): text_key(p.prompt, "") for ps in pairs.values() for p in ps}
    # RewardBench 2 / RM-Bench pairs: their groups, scored whole by the benchmark's own rule
    grouped = [(p, json.loads(p.benchmark)) for ps in pairs.values() for p in ps if p.benchmark]
    seed_metrics: dict[str, Any] = {}
    for label, model in [*zip(labels, cfg.models, strict=True), *extra_models]:
        t0 = time.monotonic()
        score, cached[label] = scores_of(label, model, texts, cfg, log)
        seconds[label] = round(time.monotonic() - t0, 2)
        rows = []
        for v in variants:
            r = ScoredVariant(
                v.dataset,
                v.pair_id,
                v.subset,
                v.variant,
                score[v.chosen_key],
                score[v.rejected_key],
                prompt_of.get((v.dataset, v.pair_id), ""),
            )
            rows.append(r)
            row = {k: x for k, x in r.__dict__.items() if k != "prompt_id"}
            scores_table.add({"model": label, **row, "outcome": r.outcome})
        weighting = {"categories": cfg.categories, "subset_weights": cfg.subset_weights,
                     "upweight_math": cfg.upweight_math}  # fmt: skip
        items[label] = per_item(rows, **weighting)
        out = metrics if label in labels else seed_metrics
        out[label] = model_metrics(
            rows, **weighting, shift_threshold=cfg.shift_threshold, seed=cfg.seed, reps=cfg.bootstrap_reps,
            items=items[label],
        )  # fmt: skip
        if grouped:
            out[label]["benchmarks"] = benchmark_scores(
                [
                    (
                        meta,
                        p.subset,
                        score[text_key(p.prompt, p.chosen)],
                        score[text_key(p.prompt, p.rejected)],
                    )
                    for p, meta in grouped
                ],
                cfg.seed,
            )
        if groups and bon_table is not None:

            def reward(c: Candidate, score: dict[str, float] = score) -> float:
                return score[text_key(c.prompt, c.response)]

            out[label]["best_of_n"] = best_of_n(groups, reward, references)
            picks = {g: pick(cands, reward) for g, cands in groups.items()}
            for g, cands in groups.items():
                for c in cands:
                    row = {"model": label, "group": g, "subset": c.subset, "source": c.source}
                    bon_table.add({**row, "quality": c.quality, "score": reward(c), "picked": c is picks[g]})
            if not any(k.startswith("model ") for k in references):
                references[f"model {label}"] = picks  # the first model's picks: the others' reference
    doc = {
        "run_name": step.run_name,
        "models": metrics,
        "model_uris": dict(zip(labels, cfg.models, strict=True)),
        "data": [{"name": run.name, "uri": run.uri, "pairs": len(pairs[run.name])} for run in data],
        "tie_rule": "equal scores count as 1/2",
        "upweight_math": cfg.upweight_math,
        "category_map": cfg.categories,
        "cue": cfg.cue.model_dump(),
        "best_of_n": bon.model_dump() if groups else None,
        "shift_threshold": cfg.shift_threshold,
        "seed": cfg.seed,
        "scoring_seconds": seconds,
        "bootstrap_reps": cfg.bootstrap_reps,
        "differences": compare(labels, items, cfg.seed, cfg.bootstrap_reps),
    }
    if rewritten:
        doc["rewrites"] = rewritten.summary
    if seeded:
        doc["seeds"] = across_seeds(labels, seeded, metrics, seed_metrics, items, cfg)
        doc["seed_models"] = seed_metrics
    report = write_report(step.folder, doc)
    counts = {"pairs": n_pairs, "variants": len(variants), "texts": len(texts), "models": len(labels),
              "best_of_n_prompts": len(groups)}  # fmt: skip
    if rewritten:
        counts["rewritten_variants"] = len(rewritten.variants)
    log(f"scored in {time.monotonic() - started:.0f} s")
    extra: dict[str, Any] = {"rewrites": rewritten.summary} if rewritten else {}
    if seeded:
        extra["seeds"] = manifest_seeds(doc["seeds"])
    return step.commit(
        counts,
        models={label: headline(m) for label, m in metrics.items()},
        differences=doc["differences"],
        report=report,
        scoring_seconds=seconds,
        scores_from_cache=cached,
        **extra,
    )
