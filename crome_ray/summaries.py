"""What a person sees: progress while a job runs, and when it ends short rich tables and where
the results are. The command line only parses and calls; every line it shows is made here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from crome_ray.evaluate.report import DIFFERENCE_ROWS, difference_cell, with_interval
from crome_ray.progress import duration


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


def print_plant(console: Console, result: Any) -> None:
    """The self-check's planted pairs: how many got the attribute, and where they are."""
    c, cfg = result.counts, result.manifest["config"]
    if result.skipped:
        console.print(f"[cyan]already committed with the same config:[/] {result.run.uri}")
    exact = c["kinds"].get("neutral_exact", 0)
    console.print(
        f"planted {c['planted']:,} of {c['pairs_in']:,} pairs (share {cfg['share']:g}, seed {cfg['seed']}) "
        f"at the {cfg['position']} of the chosen answer"
        + (f"; {exact:,} exact ties for the control" if exact else "")
    )
    console.print(f"pairs:      {result.output.uri_of('pairs')}/")


def _what_value_table(console: Console, result: Any, title: str, skipped: str = "") -> Table:
    """A job's summary table (what | value), after a line saying when the run was committed already."""
    if result.skipped:
        console.print(f"[cyan]already committed with the same config:[/] {result.run.uri}{skipped}")
    table = Table(title=title, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    return table


def print_oracle(console: Console, result: Any) -> None:
    """Summary of an ``OracleJobResult``."""
    m = result.manifest
    table = _what_value_table(console, result, f"oracle: {m['run_name']}")
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


def _print_gate(console: Console, gate: dict[str, Any], verify_neutrals: bool | None) -> None:
    """The quality gate per oracle-written kind: what was asked, what refused it, what stayed."""
    if not gate:
        return
    table = Table(title="quality gate per kind", title_justify="left")
    for col in (
        "kind",
        "asked",
        "answered",
        "refused by",
        "verified (pass/fail)",
        "accepted",
        "share",
        "in pairs",
    ):
        table.add_column(col, justify="left" if col in ("kind", "refused by", "in pairs") else "right")
    for kind, r in gate.items():
        refused = ", ".join(f"{k.removeprefix('checks:')} {v:,}" for k, v in
                            sorted(r["rejected"].items(), key=lambda kv: -kv[1])) or "-"  # fmt: skip
        verified = f"{r['verified']['pass']:,}/{r['verified']['fail']:,}" if r["verified"] else "-"
        share = "-" if r["accepted_share"] is None else f"{r['accepted_share']:.0%}"
        verdict = "[yellow]left out[/]" if r["left_out"] else ("yes (not judged)" if r["note"] else "yes")
        table.add_row(kind.replace("_", " "), f"{r['asked']:,}", f"{r['answered']:,}", refused, verified,
                      f"{r['accepted']:,}", share, verdict)  # fmt: skip
    console.print(table)
    for kind, r in gate.items():
        if r["left_out"]:
            console.print(f"[yellow]{kind} left out of pairs:[/] {r['left_out']}")
    if verify_neutrals is False and any(k.startswith("neutral_") for k in gate):
        console.print("[dim]CAN and PARA were not sent to the verifier (tasks.verify_neutrals auto: the "
                      "oracle is a local model under 1B); the code checks alone judged them.[/]")  # fmt: skip


def print_augment(console: Console, result: Any) -> None:
    """Summary of an augmentation run."""
    m = result.manifest
    c, d = m["counts"], m["details"]
    table = _what_value_table(console, result, f"augment: {m['run_name']}")
    table.add_row("source rows / examples", f"{c['source_rows']:,} / {c['examples']:,}")
    for k, v in c.items():
        if k.startswith("pairs_"):
            table.add_row(f"  {k[6:].replace('_', ' ')}", f"{v:,}")
    table.add_row("training pairs", f"{c['pairs']:,} ({c['ratio_to_source']:.2f}× the source)", style="bold")
    if c.get("left_out"):
        table.add_row("left out by the quality gate", f"{c['left_out']:,}", style="yellow")
    table.add_row("rejected rewrites", f"{c['rejected']:,}")
    table.add_row("filtered by the baseline", f"{c['filtered']:,}")
    table.add_row("quarantined calls", f"{c['quarantine']:,}")
    for verifier, ctl in d["controls"].items():
        if isinstance(ctl, dict) and ctl.get("false_pass_rate") is not None:
            name = "verifier" if verifier == "causal" else f"{verifier.replace('_', ' ')} verifier"
            table.add_row(f"{name} false-pass rate (controls)", f"{ctl['false_pass_rate']:.0%} of "
                          f"{ctl['passed'] + ctl['failed']}")  # fmt: skip
    for name in ("oracle", "fallback"):
        o = d.get(name)
        if o:
            table.add_row(
                f"{name} calls / cache hits / 429s", f"{o['grants']:,} / {o['hits']:,} / {o['throttled']:,}"
            )
            table.add_row(f"{name} spent", f"${o['spent_usd']:.4f} of ${o['cap_usd']:.2f} cap")
            _engines(table, o, f"{name} ")
    console.print(table)
    _print_gate(console, d.get("gate") or {}, d.get("verify_neutrals"))
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
    final = d["final"]
    title = f"train: {result.run.uri.rsplit('/', 1)[1]}"
    table = _what_value_table(console, result, title, " (force to redo)")
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

    def iv(x: dict[str, Any], key: str, sub: str | None = None) -> Any:
        found = (x.get("intervals") or {}).get(key)
        return (found or {}).get(sub) if sub else found

    rows: list[tuple[str, Any, Any, int]] = [
        (c, lambda x, c=c: x["categories"].get(c), lambda x, c=c: iv(x, "categories", c), 3) for c in cats
    ]
    rows += [
        (name, lambda x, k=key: x[k], lambda x, k=key: iv(x, k), digits)
        for name, key, digits in DIFFERENCE_ROWS
    ]
    for name, key in (
        ("Best-of-N: quality of the picks", "best_of_n_quality"),
        ("RewardBench 2 (its rule)", "rewardbench2"),
        ("RM-Bench (its rule, average)", "rm_bench"),
    ):
        if any(x.get(key) is not None for x in models.values()):  # only where the data had it
            rows.append((name, lambda x, k=key: x.get(k), lambda x: None, 3))  # fmt: skip
    for name, get, interval, digits in rows:
        table.add_row(name, *[with_interval(get(x), interval(x), digits) for x in models.values()])
    console.print(table)
    diff = d.get("differences")
    if diff:
        others = list(diff["models"])
        t = Table(title=f"paired differences against {diff['baseline']} (95% interval, p; ✓ not zero)")
        t.add_column("")
        for b in others:
            t.add_column(f"{b} − {diff['baseline']}", justify="right")
        for name, key, digits in DIFFERENCE_ROWS:
            t.add_row(name, *[difference_cell(diff["models"][b].get(key), digits) for b in others])
        console.print(t)
        shown = [
            name
            for name, key, _ in DIFFERENCE_ROWS
            for b in others
            if (diff["models"][b].get(key) or {}).get("distinguishable")
        ]
        console.print(
            "distinguishable from zero: "
            + (
                ", ".join(dict.fromkeys(shown))
                if shown
                else "none (every difference could be noise at this size)"
            )
        )
    seeds = d.get("seeds")
    if seeds:
        print_seeds(console, seeds)
    c = m["counts"]
    console.print(
        f"{c['pairs']:,} pairs, {c['variants']:,} variants, {c['texts']:,} texts per model; equal scores "
        "count as 1/2; cue shift in units of the model's reward spread"
    )
    committed = result.run.committed()
    console.print(f"report:    {committed.uri_of('report.md')}")
    console.print(f"html:      {committed.uri_of('report.html')}")
    console.print(f"manifest:  {committed.uri_of('manifest.json')}")


def print_seeds(console: Console, seeds: dict[str, Any]) -> None:
    """Each model's numbers across its training seeds (mean ± sd), and each model's gap from the
    baseline on the seed means, ★ where it is larger than any reseed moved the number."""
    from crome_ray.evaluate.seeds import beyond_seed_noise

    models = seeds["models"]
    t = Table(title="across training seeds (mean ± sd; ★ gap beyond every reseed)", header_style="bold")
    t.add_column("")
    for label, x in models.items():
        n = len(x["seeds"])
        t.add_column(f"{label} ({n} seed{'s' * (n > 1)})", justify="right")
    between = seeds["between_models"]
    for name, key, digits in DIFFERENCE_ROWS:
        cells = []
        for label, x in models.items():
            a = x["metrics"].get(key)
            cell = "–" if not a else f"{a['mean']:.{digits}f} ± {a['sd']:.{digits}f}"
            gap = (between["models"].get(label) or {}).get(key)
            if gap and a:
                cell += f" ({gap['value']:+.{digits}f}{' ★' if beyond_seed_noise(seeds, label, key) else ''})"
            cells.append(cell)
        t.add_row(name, *cells)
    console.print(t)


def print_tune(console: Console, result: Any) -> None:
    """The sweep's trials, the best λ and the best model's path."""
    m, d = result.manifest, result.details
    if result.skipped:
        console.print(f"[cyan]already committed with the same config and inputs:[/] {result.run.uri}")
    trials = result.run.read_table("trials").to_pylist()
    table = Table(
        title=f"tune: {result.run.uri.rsplit('/', 1)[1]} ({d['metric']}, {d['mode']})", header_style="bold"
    )
    for col in ("λ", "seed", "status", "evaluations", "step", d["metric"], "clean accuracy"):
        table.add_column(col, justify="right" if col != "status" else "left")
    for t in trials:
        metric = "–" if t["metric"] is None else f"{t['metric']:.4f}"
        clean = "–" if t.get("clean_accuracy") is None else f"{t['clean_accuracy']:.4f}"
        cells = [f"{t['tie_weight']:g}", str(t["seed"]), t["status"], str(t["evaluations"]), str(t["step"])]
        table.add_row(*cells, metric, clean)
    console.print(table)
    best = d["best"]
    c = m["counts"]
    console.print(
        f"{c['completed']} completed, {c['stopped_early']} stopped early by {d['scheduler']}, "
        f"{c['failed']} failed in {d['seconds']:.0f} s; best λ = {best['tie_weight']:g} "
        f"(seed {best['seed']}, {d['metric']} {best['metric']:.4f})"
        + (
            f", among trials within {d['clean_tolerance']:g} of the best clean accuracy"
            if d.get("clean_tolerance") is not None
            else ""
        )
    )
    committed = result.run.committed()
    console.print(f"best model: {d['best_model']}")
    console.print(f"report:     {committed.uri_of('report.md')}")


# ---------------------------------------------------------------- progress while a job runs


@contextmanager
def ingest_progress(console: Console, source: str) -> Iterator[Callable[[Any], None]]:
    """A transient spinner line for the ingest: records read, pairs written, quarantined."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"ingesting {source}")

        def update(c: Any) -> None:
            bar.update(
                task,
                description=f"ingesting {source}: {c.records_read:,} records, {c.pairs_written:,} pairs, "
                f"{sum(c.quarantined.values()):,} quarantined",
            )

        yield update


def oracle_progress(console: Console) -> Callable[[dict[str, Any]], None]:
    """A line per progress report of the oracle job."""

    def show(s: dict[str, Any]) -> None:
        console.print(
            f"  {s['rows']:,}/{s['of']:,} rows | {s['grants']:,} calls, {s['hits']:,} cache hits | "
            f"${s['spent_usd']:.4f} of ${s['cap_usd']:.2f} | rate x{s['rate_scale']:.2f}"
        )

    return show


def augment_progress(console: Console) -> Callable[[dict[str, Any]], None]:
    """A line per progress report of the augmentation: examples, pairs, calls and their rate,
    cache hits, 429s, spend against the cap, ETA."""

    def show(s: dict[str, Any]) -> None:
        eta = f"ETA {duration(s.get('eta_s'))}"
        console.print(
            f"  {s['examples']:,}/{s['of']:,} examples | {s['pairs']:,} pairs | {s['calls']:,} calls "
            f"({s['calls_per_s']:.1f}/s), {s['hits']:,} cache hits, {s['throttled']:,} 429s | "
            f"${s['spent_usd']:.4f} of ${s['cap_usd'] or 0:.2f} | {'done' if s['final'] else eta}"
        )

    return show


class PipelineView:
    """What the pipeline shows: a rule per step, each step's summary, a line per tenth of the
    augmentation, and at the end a table of the steps and where the report is."""

    def __init__(self, console: Console, steps: tuple[str, ...], *, sweep: bool):
        self.console, self.steps, self._tenth = console, steps, -1
        self.printers = {
            "ingest": print_ingest,
            "baseline": print_train,
            "augment": print_augment,
            "crome": print_tune if sweep else print_train,
            "plant": print_plant,
            "control": print_train,
            "evaluate": print_evaluate,
        }

    def started(self, step: str, what: str) -> None:
        self.console.rule(f"[bold]{self.steps.index(step) + 1}/{len(self.steps)}  {step}: {what}")

    def done(self, step: str, result: Any) -> None:
        if result.skipped:
            self.console.print(f"[green]committed already[/] (same config, same inputs): {result.run.uri}")
            if step != "evaluate":
                return
        self.printers[step](self.console, result)

    def augment_progress(self, s: dict[str, Any]) -> None:
        """A line per tenth of the examples, and the last."""
        tenth = 10 * s["examples"] // max(1, s["of"])
        if s["final"] or tenth > self._tenth:
            self._tenth = tenth
            eta = "done" if s["final"] else f"ETA {duration(s.get('eta_s'))}"
            self.console.print(
                f"  {s['examples']:,}/{s['of']:,} examples | {s['pairs']:,} pairs | {s['calls']:,} calls "
                f"({s.get('calls_per_s', 0):.1f}/s) | ${s['spent_usd']:.4f} | {eta}"
            )

    def finish(self, outcome: Any, seconds: float, *, demo: bool) -> None:
        c = self.console
        c.rule("[bold]pipeline")
        for r in outcome.steps:
            status = "done " if r.done else "found"
            c.print(f"  {r.name:<9} {status} {r.seconds:>7.1f} s  {shown_uri(r.uri)}")
        details = outcome.result.manifest.get("details", {})
        c.print(f"pipeline run: {outcome.result.run.uri} ({seconds:.0f} s)")
        if details.get("report"):
            c.print(f"report:       {details['report']}")
        if details.get("selfcheck"):
            c.rule("[bold]self-check: the planted attribute")
            for line in details["selfcheck"]["lines"]:
                c.print(f"  {line}")
        if demo:
            c.print(
                "[dim]A demo-sized run (a 22M encoder, 100 steps, a 135M local oracle) shows the machinery "
                "end to end; its clean accuracies are near chance and say nothing about the method. What it "
                "can show is the self-check: whether the trainer and loss remove an attribute planted in the "
                "data, and how much of that the oracle's data delivers. The augmentation's table shows what "
                "the code checks and the verifier controls caught.[/]"
            )
        if details.get("report_html"):
            c.print(f"[bold]report:[/] {shown_uri(details['report_html'])}")
            c.print(f"  open it: crome-ray report {outcome.result.run.uri} --open")


# ---------------------------------------------------------------- one-shot commands


def print_notice(console: Console, notice: str | None) -> None:
    """A line the oracle choice asks to show (no key: the local model is the oracle)."""
    if notice:
        head, _, rest = notice.partition(": ")
        console.print(f"[yellow]{head}:[/] {rest}")


def print_dry_run(console: Console, doc: dict[str, Any]) -> None:
    """The augmentation's projection: the JSON, then one line against the cap."""
    console.print_json(json.dumps(doc))
    verdict = "within" if doc["within_cap"] else "[bold red]over[/]"
    console.print(
        f"{doc['examples']:,} examples: {doc['total_calls']:,} calls at most, "
        f"~{doc['input_tokens']:,} input and ~{doc['output_tokens']:,} output tokens, "
        f"~${doc['usd'] or 0:.4f}: {verdict} the cap of ${doc['cap_usd']:g}"
    )


def print_probe(console: Console, r: Any) -> None:
    """``crome-ray oracle probe``: the model, its answer's start, latency, tokens and cost."""
    cost = "no price configured" if r.cost_usd is None else f"${r.cost_usd:.6f}"
    console.print(
        f"[green]ok[/]: model {r.model} answered {r.text[:40]!r} in {r.latency_s * 1000:.0f} ms; "
        f"{r.input_tokens} input / {r.output_tokens} output tokens; {cost}"
    )


def print_run(console: Console, manifest: dict[str, Any], stale: list[str]) -> None:
    """``crome-ray runs show``: the manifest, then whether it is up to date with its inputs."""
    console.print_json(json.dumps(manifest, default=str))
    if stale:
        console.print("[yellow]stale:[/] " + "; ".join(stale) + " (re-run the step to bring it up to date)")
    else:
        attempt = manifest.get("attempt", "-")
        console.print(f"[green]committed[/] attempt {attempt}, up to date with its inputs")


def print_runs(console: Console, root: str, statuses: list[Any], now: float) -> None:
    """``crome-ray runs list``: the table, then why each stale run is stale."""
    if not statuses:
        console.print(f"no runs under {root}")
        return
    console.print(runs_table(statuses, now))
    for s in statuses:
        if s.reasons and s.state == "stale":
            console.print(f"[yellow]{s.job}/{s.name}[/]: " + "; ".join(s.reasons))


def print_samples(
    console: Console, uri: str, table: str, kind: str | None, rows: list[Any], total: int, width: int
) -> None:
    """``crome-ray inspect``: each sampled row as a panel: request, then A and B side by side."""
    what = f"{table}" + (f" of kind {kind}" if kind else "")
    if not rows:
        console.print(f"no rows in {what} of {uri}")
        return
    console.print(f"[bold]{len(rows)} of {total:,} rows[/] in {what} of {uri}")

    def clip(text: str) -> str:
        return text if len(text) <= width else text[:width] + f" … (+{len(text) - width:,} chars)"

    for i, r in enumerate(rows, 1):
        # the texts are data: shown as Text, never read as rich markup
        grid = Table(title=Text(f"{i}. {r.kind} | label {r.label} | {r.source_id}"), title_justify="left",
                     show_lines=True, expand=True)  # fmt: skip
        grid.add_column(f"A ({len(r.a):,} chars)", ratio=1, overflow="fold")
        grid.add_column(f"B ({len(r.b):,} chars)", ratio=1, overflow="fold")
        grid.add_row(Text(clip(r.a)), Text(clip(r.b)))
        console.print(Text.assemble(("request: ", "dim"), clip(r.prompt)[:300]))
        console.print(grid)
        console.print(Text.assemble(("decided: ", "dim"), r.decided))


def print_scores(console: Console, scored: Any, rows: int, source: str, output: str | None) -> None:
    """``crome-ray score``: what was scored with what, the pair accuracy, where the scores are."""
    if scored.pairs:
        console.print(f"scored {rows:,} pairs with {source}: pair accuracy {scored.accuracy:.3f}")
    else:
        console.print(f"scored {rows:,} responses with {source}")
    if output:
        console.print(f"scores: {output}")
