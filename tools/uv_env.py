"""Print the ``UV_*`` settings that make ``uv pip install`` see what ``pip install`` sees.

``make install`` installs with uv (parallel downloads, installs and bytecode compilation: the
project's ~3.5 GB of wheels in about a third of pip's time on 2 cores). uv does not read pip's
configuration, so this reads it (``pip config list``: the files and the ``PIP_*`` variables
together) and prints shell ``export`` lines for the settings uv has too: indexes, find-links,
constraints, certificates, timeout. pip looks at every index for the best version; uv only
does so with ``unsafe-best-match``, which is set when pip's configuration names extra indexes.

Standard library only: it runs in the fresh venv before anything is installed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

# pip's option -> uv's variable (options set both in a file and the environment: the
# environment wins, as in pip)
UV_VARIABLES = {
    "index-url": "UV_DEFAULT_INDEX",
    "extra-index-url": "UV_INDEX",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
    "cert": "SSL_CERT_FILE",
    "default-timeout": "UV_HTTP_TIMEOUT",
}


def pip_settings(listing: str) -> dict[str, str]:
    """``pip config list`` lines (``scope.option='value'``) -> option -> value (``:env:`` last)."""
    found: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, option = key.rsplit(".", 1)
        rank = 1 if scope == ":env:" else 0
        if option not in found or rank >= found[option][0]:
            found[option] = (rank, value.strip().strip("'\""))
    return {k: v for k, (_, v) in found.items()}


def uv_exports(settings: dict[str, str]) -> list[str]:
    lines = []
    for option, variable in UV_VARIABLES.items():
        if option in settings:
            value = settings[option]
            if option in ("extra-index-url", "find-links"):  # pip: whitespace-separated lists
                value = " ".join(value.split())
            lines.append(f"export {variable}={shlex.quote(value)}")
    if "extra-index-url" in settings:
        lines.append("export UV_INDEX_STRATEGY=unsafe-best-match")
    return lines


def main() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    print("\n".join(uv_exports(pip_settings(proc.stdout))))


if __name__ == "__main__":
    main()
