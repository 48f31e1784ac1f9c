"""The Gemini simulator as a process of its own, for benchmarks that measure their own process
(its memory, its CPU): the simulator's bookkeeping grows with the calls it answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sim_process(latency: float = 0.0, *options: str) -> tuple[subprocess.Popen, str]:
    """``crome-ray oracle sim`` on a free port (no quota unless ``options`` set one, e.g.
    ``"--rpm", "3000"``): the process and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crome_ray.cli",
            "oracle",
            "sim",
            *("--port", str(port)),
            "--latency",
            f"{latency}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/_sim/stats", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("simulator did not start")
