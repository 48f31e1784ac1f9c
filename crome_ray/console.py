"""How the command line talks to a person: its two consoles, and the one way a command fails.

A ``CromeError`` (a problem the user can act on) ends a command with its message on stderr and
an exit code: 2 for a config or a missing key, 1 for a run that failed. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console

from crome_ray.errors import CromeError

console = Console(soft_wrap=True)  # paths and URIs stay whole for copy and paste
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def exits_on_error(code: int = 1) -> Iterator[None]:
    """A ``CromeError`` inside ends the command with its message and ``code``."""
    try:
        yield
    except CromeError as e:
        fail(str(e), code)
