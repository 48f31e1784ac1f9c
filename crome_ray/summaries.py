"""What a person sees when a job ends: short rich tables and where the results are."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
    tables = result.manifest["tables"]
    console.print(f"pairs:      {result.run.uri_of(tables['pairs'][0]).rsplit('/', 1)[0]}/")
    console.print(f"quarantine: {result.run.uri_of(tables['quarantine'][0]).rsplit('/', 1)[0]}/")
    console.print(f"manifest:   {result.run.uri_of('manifest.json')}")
