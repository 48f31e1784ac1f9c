"""Kill a job's driver part way through, then run the same job again: the harness the oracle's and
the augmentation's resume tests share.

The first run is ``python jobs/<job>.py --config FILE`` in a session of its own, with its own
local Ray cluster; once the Gemini simulator has answered ``answered`` calls, the driver and
everything it started die at once (SIGKILL to the process group, then the cluster's processes).
The second run is the same command, to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.test_cluster import stop_cluster

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Resumed:
    answered_at_kill: int  # what the simulator had answered when the first driver died
    at_kill: Any  # what ``inspect`` returned between the kill and the resume
    second: subprocess.CompletedProcess  # the resumed run, which succeeded


def kill_then_resume(
    job: str,
    config: dict[str, Any],
    sim,
    *,
    key: str,
    answered: int,
    folder: Path,
    inspect: Callable[[], Any] | None = None,
    first_timeout: float = 120,
    resume_timeout: float = 300,
) -> Resumed:
    """Run ``jobs/<job>.py`` on ``config`` (the key only in GEMINI_API_KEY), kill it once ``sim`` has
    answered ``answered`` calls, call ``inspect``, run it again to the end."""
    path = folder / f"{job}.yaml"
    path.write_text(json.dumps({"job": job, **config}))
    ray_tmp = tempfile.mkdtemp(prefix="crk", dir="/tmp")  # short: Ray's socket paths have a length cap
    env = {**os.environ, "GEMINI_API_KEY": key, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, str(REPO / "jobs" / f"{job}.py"), "--config", str(path)]
    first = subprocess.Popen(
        command, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + first_timeout
    while sim.stats.answered < answered and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, first.stdout.read().decode()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started dies at once
    stop_cluster(ray_tmp)
    first.wait(30)
    answered_at_kill = sim.stats.answered
    seen = inspect() if inspect else None
    second = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=resume_timeout
    )
    stop_cluster(ray_tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return Resumed(answered_at_kill, seen, second)
