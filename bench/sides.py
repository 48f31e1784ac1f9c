"""Running a benchmark's sides one after another, each in a process of its own.

A side prints ``RESULT <json>`` as its last such line; a side that fails gives
``{"error": <the end of its output>}`` instead, so the other sides still report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_side(script: str, side: str, args: Namespace, passed_on: tuple[str, ...], *extra: str) -> dict:
    cmd = [sys.executable, script, "--side", side, *extra]
    for k in passed_on:
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(lines[-1][len("RESULT ") :])
