"""What a person sees when a job ends: short rich tables and where the results are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def shown_uri(uri: str, cwd: Path | None = None) -> str:
    """A run's location as a person reads it next to the others: a local absolute path under the
    working folder relative to it (training runs keep absolute paths in their manifests, for Ray
    Train's workers; the other steps' stay as the root was given), anything else as it is."""
    if "://" in uri or not os.path.isabs(uri):
        return uri
    try:
        return str(Path(uri).relative_to((cwd or Path.cwd()).resolve()))
    except ValueError:
        return uri


def ingest_table(counts: dict[str, Any], title: str = "ingest") -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("rows", justify="right")
    table.add_row("records read", f"{counts['records_read']:,}")
    table.add_row("pairs written", f"{counts['pairs_written']:,}", style="bold green")
    table.add_row("  of which ties", f"{counts['ties_kept']:,}")
    table.add_row("score ties dropped", f"{counts['ties_dropped']:,}")
    if counts.get("unpaired"):
        table.add_row("prompts with nothing to pair", f"{counts['unpaired']:,}")
    table.add_row(
        "quarantined",
        f"{counts['quarantined']:,}",
        style="yellow" if counts["quarantined"] else None,
    )
    for reason, n in counts["quarantined_by_reason"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    return table


def print_ingest(console: Console, result: Any) -> None:
    """Summary of an ``IngestResult`` (a fresh run or a skipped, already committed one)."""
    if result.skipped:
        console.print(
            f"[cyan]already committed with the same config:[/] {result.run.uri} (nothing to do; "
            "force to redo)"
        )
    console.print(ingest_table(result.counts, title=f"ingest: {result.manifest['run_name']}"))
    out = result.output
    console.print(f"pairs:      {out.uri_of('pairs')}/")
    console.print(f"quarantine: {out.uri_of('quarantine')}/")
    console.print(f"manifest:   {out.uri_of('manifest.json')}")


def print_oracle(console: Console, result: Any) -> None:
    """Summary of an ``OracleJobResult``."""
    m = result.manifest
    if result.skipped:
        console.print(f"[cyan]already committed with the same config:[/] {result.run.uri}")
    table = Table(title=f"oracle: {m['run_name']}", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in m["counts"].items():
        table.add_row(k.replace("_", " "), f"{v:,}")
    d = m["details"]
    o = d["oracle"]
    if o:
        table.add_row("calls (paid attempts)", f"{o['grants']:,}")
        table.add_row("cache hits", f"{o['hits']:,}")
        table.add_row("throttled (429)", f"{o['throttled']:,}")
        table.add_row("spent", f"${o['spent_usd']:.4f} of ${o['cap_usd']:.2f} cap", style="bold")
        _engines(table, o, "")
    if d.get("primary_unavailable"):
        table.add_row("primary oracle", "unavailable: every row to the fallback")
    fb = d.get("fallback")
    if fb:
        asked = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in fb.get("asked_for", {}).items())
        table.add_row("fallback asked for", asked or "-")
        table.add_row("fallback calls / cache hits", f"{fb['grants']:,} / {fb['hits']:,}")
        table.add_row("fallback spent", f"${fb['spent_usd']:.4f} of ${fb['cap_usd']:.2f} cap")
        _engines(table, fb, "fallback ")
    console.print(table)
    if d.get("primary_unavailable"):
        console.print(f"[yellow]primary oracle unavailable:[/] {d['primary_unavailable']}")
    console.print(f"responses:  {result.output.uri_of('responses')}/")
    console.print(f"ledger:     {d['ledger']}")


def print_augment(console: Console, result: Any) -> None:
    """Summary of an augmentation run."""
    m = result.manifest
    if result.skipped:
        console.print(f"[cyan]already committed with the same config:[/] {result.run.uri}")
    c, d = m["counts"], m["details"]
    table = Table(title=f"augment: {m['run_name']}", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("source rows / examples", f"{c['source_rows']:,} / {c['examples']:,}")
    for k, v in c.items():
        if k.startswith("pairs_"):
            table.add_row(f"  {k[6:].replace('_', ' ')}", f"{v:,}")
    table.add_row("training pairs", f"{c['pairs']:,} ({c['ratio_to_source']:.2f}× the source)", style="bold")
    table.add_row("rejected rewrites", f"{c['rejected']:,}")
    table.add_row("filtered by the baseline", f"{c['filtered']:,}")
    table.add_row("quarantined calls", f"{c['quarantine']:,}")
    ctl = d["controls"]
    if ctl.get("false_pass_rate") is not None:
        table.add_row("verifier false-pass rate (controls)", f"{ctl['false_pass_rate']:.0%} of "
                      f"{ctl.get('passed', 0) + ctl.get('failed', 0)}")  # fmt: skip
    for name in ("oracle", "fallback"):
        o = d.get(name)
        if o:
            table.add_row(
                f"{name} calls / cache hits / 429s", f"{o['grants']:,} / {o['hits']:,} / {o['throttled']:,}"
            )
            table.add_row(f"{name} spent", f"${o['spent_usd']:.4f} of ${o['cap_usd']:.2f} cap")
            _engines(table, o, f"{name} ")
    console.print(table)
    if d.get("rejected_by"):
        console.print("rejected by: " + ", ".join(f"{k} {v:,}" for k, v in d["rejected_by"].items()))
    if d.get("quarantine_by"):
        console.print("quarantined: " + ", ".join(f"{k} {v:,}" for k, v in d["quarantine_by"].items()))
    if d.get("primary_unavailable"):
        console.print(f"[yellow]primary oracle unavailable:[/] {d['primary_unavailable']}")
    console.print(f"pairs:      {result.output.uri_of('pairs')}/")
    console.print(f"train on it: crome-ray train --data {result.run.uri}")


def _engines(table: Table, stats: dict[str, Any], prefix: str) -> None:
    for e in stats.get("engines", []):
        table.add_row(f"{prefix}engine start-up ({e['model']})", f"{e['startup_s']:.1f} s")


def print_train(console: Console, result: Any) -> None:
    """Summary of a ``TrainResult``."""
    m, d = result.manifest, result.details
    if result.skipped:
        console.print(f"[cyan]already committed with the same config:[/] {result.run.uri} (force to redo)")
    final = d["final"]
    table = Table(title=f"train: {result.run.uri.rsplit('/', 1)[1]}", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    pairs = m["counts"]["pairs"]
    table.add_row("training pairs (ties)", f"{pairs['train']:,} ({m['counts']['ties']['train']:,})")
    table.add_row("truncated pairs", f"{m['counts']['truncated']['train']:,}")
    table.add_row("steps", f"{final.get('step', 0):,} of {d['steps']:,}")
    if d.get("resumed"):
        table.add_row("resumed from step", f"{final.get('started_at_step', 0):,}")
    for key, label in (
        ("loss", "loss (last window)"),
        ("pair_accuracy", "train pair accuracy (last window)"),
        ("eval_accuracy", "eval pair accuracy"),
        ("eval_tie_abs_delta", "eval mean |Δ| on ties"),
        ("tokens_per_s", "tokens/s"),
    ):
        if key in final:
            table.add_row(label, f"{final[key]:,.3f}" if key != "tokens_per_s" else f"{final[key]:,.0f}")
    table.add_row("wall time", f"{m['timings']['seconds']:,.0f} s")
    console.print(table)
    for name, uri in d["exported"].items():
        console.print(f"{name + ':':<10} {uri}")
    console.print(f"manifest:  {result.output.uri_of('manifest.json')}")


def runs_table(statuses: list[Any], now: float) -> Table:
    """``crome-ray runs list``: one line per run folder."""
    table = Table(title="runs", header_style="bold")
    for col in ("step", "run", "status", "rows"):
        table.add_column(col)
    table.add_column("age", justify="right")
    style = {"committed": "green", "stale": "yellow", "incomplete": "red"}
    for s in statuses:
        rows = ", ".join(f"{name} {n:,}" for name, n in s.rows.items())
        status = f"[{style[s.state]}]{s.state}[/]"
        if s.uncommitted_attempts and s.state != "incomplete":
            status += f" (+{s.uncommitted_attempts} unfinished)"
        age = _age(now - s.committed_at) if s.committed_at else "-"
        table.add_row(s.job, s.name, status, rows or "-", age)
    return table


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def print_evaluate(console: Console, result: Any) -> None:
    """The models side by side: categories, the headline average, transformations and the cue."""
    m, d = result.manifest, result.details
    if result.skipped:
        console.print(f"[cyan]already committed with the same config and inputs:[/] {result.run.uri}")
    models: dict[str, Any] = d["models"]
    cats = sorted({c for x in models.values() for c in x["categories"]})
    table = Table(title=f"evaluate: {result.run.uri.rsplit('/', 1)[1]}", header_style="bold")
    table.add_column("accuracy (ties ½)")
    for label in models:
        table.add_column(label, justify="right")

    def f(x: Any, digits: int = 3) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    rows: list[tuple[str, Any, int]] = [(c, lambda x, c=c: x["categories"].get(c), 3) for c in cats]
    rows += [
        ("Average (of categories)", lambda x: x["average"], 3),
        ("all pairs", lambda x: x["overall"], 3),
        ("transformed (macro)", lambda x: x["transformed_macro_accuracy"], 3),
        ("drop under transformation", lambda x: x["transformed_macro_drop"], 3),
        ("cue: reward shift (spreads)", lambda x: x["cue_shift_in_spread"], 2),
        ("cue on the rejected answer", lambda x: x["accuracy_cue_on_rejected"], 3),
        ("Best-of-N: quality of the picks", lambda x: x.get("best_of_n_quality"), 3),
    ]
    for name, get, digits in rows:
        table.add_row(name, *[f(get(x), digits) for x in models.values()])
    console.print(table)
    c = m["counts"]
    console.print(
        f"{c['pairs']:,} pairs, {c['variants']:,} variants, {c['texts']:,} texts per model; equal scores "
        "count as 1/2; cue shift in units of the model's reward spread"
    )
    committed = result.run.committed()
    console.print(f"report:    {committed.uri_of('report.md')}")
    console.print(f"manifest:  {committed.uri_of('manifest.json')}")


def print_tune(console: Console, result: Any) -> None:
    """The sweep's trials, the best λ and the best model's path."""
    m, d = result.manifest, result.details
    if result.skipped:
        console.print(f"[cyan]already committed with the same config and inputs:[/] {result.run.uri}")
    trials = result.run.read_table("trials").to_pylist()
    table = Table(
        title=f"tune: {result.run.uri.rsplit('/', 1)[1]} ({d['metric']}, {d['mode']})", header_style="bold"
    )
    for col in ("λ", "seed", "status", "evaluations", "step", d["metric"]):
        table.add_column(col, justify="right" if col != "status" else "left")
    for t in trials:
        metric = "–" if t["metric"] is None else f"{t['metric']:.4f}"
        table.add_row(
            f"{t['tie_weight']:g}", str(t["seed"]), t["status"], str(t["evaluations"]), str(t["step"]), metric
        )
    console.print(table)
    best = d["best"]
    c = m["counts"]
    console.print(
        f"{c['completed']} completed, {c['stopped_early']} stopped early by {d['scheduler']}, "
        f"{c['failed']} failed in {d['seconds']:.0f} s; best λ = {best['tie_weight']:g} "
        f"(seed {best['seed']}, {d['metric']} {best['metric']:.4f})"
    )
    committed = result.run.committed()
    console.print(f"best model: {d['best_model']}")
    console.print(f"report:     {committed.uri_of('report.md')}")
