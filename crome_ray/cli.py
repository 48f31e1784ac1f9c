"""The ``crome-ray`` command line: one command per job, plus models and runs helpers.

Every command takes ``--config FILE`` (a YAML from jobs/configs/) and trailing
``key.sub=value`` overrides; the named options are shortcuts for common overrides. A command
parses, calls one library function and prints through ``summaries``. A ``CromeError`` (a
problem the user can act on) ends it with its message: exit 2 for a config or a missing key,
1 for a run that failed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from crome_ray import summaries as show
from crome_ray.augment.config import AugmentConfig
from crome_ray.cli_tools import (
    ROOT_HELP,
    ForceOpt,
    Overrides,
    inspect_run,
    models_app,
    oracle_app,
    report,
    runs_app,
)
from crome_ray.config import Frozen, load_config
from crome_ray.console import console, exits_on_error, fail
from crome_ray.data.config import IngestConfig
from crome_ray.errors import CromeError
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.oracle.choice import choose_oracle
from crome_ray.oracle.config import OracleJobConfig
from crome_ray.pipeline.config import PipelineConfig
from crome_ray.ray_runtime import connect
from crome_ray.train.config import TrainConfig
from crome_ray.tune.config import TuneConfig

app = typer.Typer(
    name="crome-ray",
    help="Causally robust reward modelling (Crome) on Ray: ingest, augment, train, tune, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(oracle_app, name="oracle")
app.command("inspect")(inspect_run)
app.command("report")(report)
C = TypeVar("C", bound=Frozen)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Job YAML (jobs/configs/*.yaml).")]
OutputOpt = Annotated[str | None, typer.Option(help=ROOT_HELP)]
SourceOpt = Annotated[
    str | None, typer.Option(help="Training pairs: a source file or folder, local, s3:// or gs://.")
]
SeedsOpt = Annotated[
    str | None,
    typer.Option(help="Training seeds, comma-separated: each RM trained once per seed; the report shows "
                 "each number's spread across seeds beside the gaps between models."),
]  # fmt: skip
RunNameOpt = Annotated[str | None, typer.Option(help="Run folder name (default: <job>-<fingerprint>).")]
CapOpt = Annotated[float | None, typer.Option(help="Hard dollar cap for the run (oracle.budget.cap_usd).")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="API endpoint (the simulator, a proxy).")]


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


def _load(cls: type[C], config: Path | None, overrides: list[str] | None, shortcuts: dict[str, Any]) -> C:
    """The job's config: defaults < ``--config`` < overrides < the named options that were given."""
    given = [
        f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in shortcuts.items() if v is not None
    ]
    with exits_on_error(2):
        return load_config(cls, config, [*(overrides or []), *given])


def _yaml_list(text: str | None) -> str | None:
    """``0,0.3,1`` (an option's comma-separated values) as the YAML list an override takes."""
    return None if text is None else "[" + text + "]"


def _choose_oracle(cfg: C, at: str = "") -> tuple[C, Any]:
    """The oracle at ``at`` with its keys from the environment, before Ray starts; says if the local
    model stands in for a missing key."""
    with exits_on_error(2):
        cfg, choice = choose_oracle(cfg, at)
    show.print_notice(console, choice.notice)
    return cfg, choice


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
    from crome_ray.data.ingest import run_ingest

    cfg = _load(IngestConfig, config, overrides, {"source.path": source, "source.format": format,
        "storage.root": output, "run_name": run_name, "source.limit": limit,
        "source.ties": ties})  # fmt: skip
    with exits_on_error(), show.ingest_progress(console, cfg.source.path) as progress:
        result = run_ingest(cfg, force=force, progress=progress)
    show.print_ingest(console, result)


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
    from crome_ray.pipeline.demo import RAY_CPUS, demo_config

    with exits_on_error(2):
        cfg = demo_config(output, quick=quick)
    _pipeline(cfg, force=force, cpus=RAY_CPUS, demo=True)


@app.command()
def pipeline(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    source: SourceOpt = None,
    sweep: Annotated[
        str | None, typer.Option(help="λ values to sweep for the Crome RM, comma-separated (Ray Tune).")
    ] = None,
    seeds: SeedsOpt = None,
    force: ForceOpt = False,
) -> None:
    """The Crome method end to end: ingest → baseline RM → augment (filtered by the baseline) →
    Crome RM (or the λ sweep's best) → evaluation of both; each step a committed run, so a
    re-run does only what changed."""
    shortcuts = {"storage.root": output, "source.path": source, "sweep.tie_weights": _yaml_list(sweep),
                 "seeds": _yaml_list(seeds)}  # fmt: skip
    _pipeline(_load(PipelineConfig, config, overrides, shortcuts), force=force)


@app.command()
def selfcheck(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    output: OutputOpt = None,
    source: SourceOpt = None,
    attribute: Annotated[
        str | None, typer.Option(help="The text to plant (default: a self-praising closing block).")
    ] = None,
    share: Annotated[
        float | None, typer.Option(help="Share of the training pairs planted (default 0.5).")
    ] = None,
    seeds: SeedsOpt = None,
    force: ForceOpt = False,
) -> None:
    """The planted-attribute self-check on your data, model and oracle: the pipeline with an
    attribute planted on the chosen answers of a share of the training pairs, and a positive
    control beside the baseline and Crome; says whether each removes the attribute's reward."""
    from crome_ray.pipeline.config import SelfCheck

    shortcuts = {"storage.root": output, "source.path": source, "selfcheck.attribute": attribute,
                 "selfcheck.share": share, "seeds": _yaml_list(seeds)}  # fmt: skip
    cfg = _load(PipelineConfig, config, overrides, shortcuts)  # selfcheck.* given: the section is made
    if cfg.selfcheck is None:
        cfg = cfg.model_copy(update={"selfcheck": SelfCheck()})
    _pipeline(cfg, force=force)


def _pipeline(cfg: PipelineConfig, *, force: bool, cpus: int | None = None, demo: bool = False) -> None:
    from crome_ray.pipeline.job import choose_oracles, run_pipeline, steps_of

    with exits_on_error(2):
        cfg, oracles = choose_oracles(cfg)  # the keys before Ray starts
    for choice in oracles.values():
        show.print_notice(console, choice.notice)
    connect(num_cpus=cpus, dashboard=True)  # the state API Ray Train and Tune poll
    view = show.PipelineView(console, steps_of(cfg), sweep=cfg.sweep is not None)
    started = time.monotonic()
    with exits_on_error():
        outcome = run_pipeline(cfg, oracles, force=force, log=console.print, step_started=view.started,
            step_done=view.done, augment_progress=view.augment_progress)  # fmt: skip
    from crome_ray import quiet
    from crome_ray.storage import Folder

    folder = Folder.from_uri(outcome.result.run.committed().uri, cfg.storage)

    def keep(log: bytes) -> str:  # the hidden output, kept with the run
        with folder.fs.open(folder.file("console.log"), "wb") as f:
            f.write(log)
        return folder.uri_of("console.log")

    quiet.keep_in(keep)
    view.finish(outcome, time.monotonic() - started, demo=demo)


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
    from crome_ray.train.job import run_train_job

    cfg = _load(TrainConfig, config, overrides, {"model": model, "train_data": data, "storage.root": output,
        "run_name": run_name, "loss.tie_weight": tie_weight, "max_steps": max_steps,
        "scaling.workers": workers, "scaling.use_gpu": gpu})  # fmt: skip
    connect(dashboard=True)
    with exits_on_error():
        result = run_train_job(cfg, force=force, log=console.print)
    show.print_train(console, result)


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
    seeds: SeedsOpt = None,
    force: ForceOpt = False,
) -> None:
    """Score reward models on RewardBench-style pairs and their reWordBench-style transformations,
    side by side: accuracy per category and per transformation, reward shift, the planted cue,
    a report with plots."""
    from crome_ray.evaluate.job import run_evaluate_job

    lists = {"models": model, "labels": label, "data": data}
    cfg = _load(EvaluateConfig, config, overrides, {**{k: json.dumps(v) for k, v in lists.items() if v},
        "storage.root": output, "run_name": run_name, "limit": limit,
        "seeds": _yaml_list(seeds)})  # fmt: skip
    keys = {}
    if cfg.rewrites.enabled:  # the oracle's keys, before Ray starts, as `oracle run` finds them
        cfg, choice = _choose_oracle(cfg, "rewrites")
        keys = {"api_key": choice.api_key, "fallback_key": choice.fallback_key}
    connect()
    with exits_on_error():
        result = run_evaluate_job(cfg, force=force, log=console.print, **keys)
    show.print_evaluate(console, result)


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
    from crome_ray.tune.job import run_tune_job

    cfg = _load(TuneConfig, config, overrides, {"storage.root": output, "run_name": run_name,
        "sweep.tie_weights": _yaml_list(tie_weights), "sweep.seeds": _yaml_list(seeds),
        "sweep.scheduler": scheduler})  # fmt: skip
    connect(dashboard=True)
    with exits_on_error():
        result = run_tune_job(cfg, force=force, log=console.print)
    show.print_tune(console, result)


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
    from crome_ray.train.score import RewardScorer, read_score_input, score_table, write_scores

    with exits_on_error():
        table = read_score_input(input)
    try:
        scorer = RewardScorer(model, batch_size=batch_size, max_length=max_length)
    except (CromeError, OSError) as e:  # OSError: transformers found no model in the folder
        fail(f"cannot load the model {model}: {e}")
    scored = score_table(scorer, table)
    if output:
        write_scores(scored.table, output)
    show.print_scores(console, scored, table.num_rows, scorer.source, output)


@oracle_app.command("run")
def oracle_run(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    input: Annotated[str | None, typer.Option("--input", help="Prompts table (jsonl/parquet).")] = None,
    output: OutputOpt = None,
    cap: CapOpt = None,
    base_url: BaseUrlOpt = None,
    force: ForceOpt = False,
) -> None:
    """Send a table of prompts to the oracle with the cluster-wide quota, the dollar cap and the cache."""
    from crome_ray.oracle.job import run_oracle_job

    cfg = _load(OracleJobConfig, config, overrides, {"input": input, "storage.root": output,
        "oracle.budget.cap_usd": cap, "oracle.base_url": base_url})  # fmt: skip
    cfg, choice = _choose_oracle(cfg)
    connect()
    with exits_on_error():
        result = run_oracle_job(cfg, choice.api_key, force=force, progress=show.oracle_progress(console),
            fallback_key=choice.fallback_key)  # fmt: skip
    show.print_oracle(console, result)


@app.command()
def augment(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Pairs: a committed ingest run folder or a source file.")
    ] = None,
    output: OutputOpt = None,
    limit: Annotated[int | None, typer.Option(help="Augment only the first N pairs.")] = None,
    cap: CapOpt = None,
    base_url: BaseUrlOpt = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline RM for the filter: a training run folder or HF model.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the calls and tokens, project the cost, and stop.")
    ] = False,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Start even when the projection exceeds the cap.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Augment preference pairs the Crome way: rubrics, counterfactuals, verification, neutral ties,
    the baseline filter; write the training set (Parquet) and its manifest."""
    from crome_ray.augment import job

    cfg = _load(AugmentConfig, config, overrides, {"input": input, "storage.root": output, "limit": limit,
        "oracle.budget.cap_usd": cap, "oracle.base_url": base_url, "filter.model": baseline,
        "allow_partial": True if allow_partial else None})  # fmt: skip
    if dry_run:
        with exits_on_error():
            show.print_dry_run(console, job.dry_run(cfg, log=console.print))
        return
    cfg, choice = _choose_oracle(cfg)
    connect()
    with exits_on_error():
        result = job.run_augment_job(cfg, choice.api_key, force=force, log=console.print,
            progress=show.augment_progress(console), fallback_key=choice.fallback_key)  # fmt: skip
    show.print_augment(console, result)


def main(argv: list[str] | None = None) -> None:
    """The ``crome-ray`` command and the jobs' entrypoints: the app, with the terminal quiet unless
    ``--verbose`` (or ``CROME_RAY_VERBOSE=1``) asks for everything (``crome_ray.quiet``)."""
    from crome_ray import quiet
    from crome_ray.ray_runtime import verbose

    args = list(sys.argv[1:] if argv is None else argv)
    leading = args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]
    if verbose() or {"-v", "--verbose"} & set(leading) or not args or "--help" in args:
        app(args)
        return
    from crome_ray.console import err_console
    from crome_ray.models import cache_root

    q = quiet.start(console, err_console, quiet.log_path(cache_root() / "logs"))
    failed: BaseException | None = None
    try:
        code = app(args, standalone_mode=False)
        if isinstance(code, int) and code:  # click returns an Exit's code without standalone mode
            raise SystemExit(code)
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except typer.TyperException as e:  # a usage error (typer's click): as click prints it, on the terminal
        if not hasattr(e, "show"):
            raise
        e.show(file=q.terminal_err if q else None)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except Exception as e:  # a bug: its traceback into the log, one line on the terminal
        failed = e
        traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        quiet.finish(failed)


if __name__ == "__main__":
    main()
