"""A quiet terminal that loses nothing: with the streams redirected, the terminal gets crome-ray's
own lines (its consoles, and the worker lines marked for the user) and the log gets everything
else, from Python, from a C-level write and from child processes alike; a bug ends with one line
naming the log that holds its traceback; a user's mistake keeps its clear message on the terminal.
The ETA of a progress line comes from the measured rate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crome_ray.progress import duration, eta_seconds, eta_text
from crome_ray.quiet import for_the_user, user_lines

REPO = Path(__file__).resolve().parents[1]


def test_the_eta_is_the_work_left_at_the_rate_measured_so_far():
    assert eta_seconds(25, 100, 10.0) == pytest.approx(30.0)  # 2.5 a second, 75 left
    assert eta_seconds(0, 100, 10.0) is None and eta_seconds(10, 100, 0.0) is None  # nothing measured
    assert eta_seconds(100, 100, 50.0) == 0.0 and eta_seconds(120, 100, 50.0) == 0.0
    assert [duration(s) for s in (None, 4.4, 65, 3600 + 125)] == ["?", "4s", "1m05s", "1h02m"]
    assert eta_text(5, 20, 10.0) == "ETA 30s"


def test_only_the_lines_a_worker_marks_reach_the_terminal():
    lines = ["WARNING: 8 PYTHON worker processes", for_the_user("step 5/20  loss 0.69  ETA 40s"), "plain"]
    assert user_lines(lines) == ["step 5/20  loss 0.69  ETA 40s"]


def run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "CROME_RAY_VERBOSE"}, **(env or {})}
    code = textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )


NOISY = """
    import os, subprocess, sys, warnings
    from pathlib import Path
    from crome_ray import quiet
    from crome_ray.console import console, err_console
    q = quiet.start(console, err_console, quiet.log_path(Path("/nowhere")))  # CROME_RAY_LOG wins
    console.print("our progress line")
    print("a library's print")
    warnings.warn("a library's warning")
    os.write(2, b"core_worker.cc:2465: written below Python\\n")
    child = "import sys; print('Traceback (most recent call last): child', file=sys.stderr)"
    subprocess.run([sys.executable, "-c", child])
    err_console.print("error: what the user must fix")
    quiet.finish()
"""


def test_the_terminal_shows_our_lines_and_the_log_keeps_the_rest(tmp_path):
    log = tmp_path / "run.log"
    proc = run(NOISY, {"CROME_RAY_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "our progress line"
    assert proc.stdout.splitlines()[1].startswith(f"log: {log} ")
    assert proc.stderr == "error: what the user must fix\n"
    hidden = log.read_text()
    for line in (
        "a library's print",
        "a library's warning",
        "core_worker.cc:2465",
        "Traceback (most recent call last): child",
    ):
        assert line in hidden and line not in proc.stdout + proc.stderr
    assert "our progress line" not in hidden


def test_without_the_redirection_the_same_script_is_loud(tmp_path):  # the control: the noise is real
    proc = run(NOISY, {"CROME_RAY_LOG": str(tmp_path / "run.log")})
    loud = run(
        NOISY.replace("q = quiet.start(", "q = None and quiet.start("),
        {"CROME_RAY_LOG": str(tmp_path / "v.log")},
    )
    assert "core_worker.cc:2465" in loud.stderr and "a library's print" in loud.stdout
    assert "core_worker.cc:2465" not in proc.stderr


def test_a_bug_ends_with_one_line_naming_the_log_and_a_mistake_with_its_message(tmp_path):
    log = tmp_path / "run.log"
    bug = run(
        """
        from crome_ray import cli
        @cli.app.command("boom")
        def boom():
            raise RuntimeError("something inside broke")
        cli.main(["boom"])
        """,
        {"CROME_RAY_LOG": str(log)},
    )
    assert bug.returncode == 1
    assert bug.stderr.strip() == (
        f"error: RuntimeError: something inside broke (a bug in crome-ray or a library: its traceback is in "
        f"{log}; --verbose shows it here)"
    )
    assert "Traceback (most recent call last)" in log.read_text() and "Traceback" not in bug.stdout
    mistake = run(
        "from crome_ray import cli; cli.main(['report', '/no/such/run'])", {"CROME_RAY_LOG": str(log)}
    )
    assert mistake.returncode == 1 and mistake.stderr.startswith(
        "error: run folder /no/such/run does not exist"
    )
    usage = run("from crome_ray import cli; cli.main(['evaluate', '--bogus'])", {"CROME_RAY_LOG": str(log)})
    assert usage.returncode == 2 and "No such option: --bogus" in usage.stderr
    loud = run(
        "from crome_ray import cli; cli.main(['--verbose', 'report', '/no/such/run'])",
        {"CROME_RAY_LOG": str(log)},
    )
    assert loud.returncode == 1 and "does not exist" in loud.stderr and "log:" not in loud.stdout


def test_the_pipelines_augmentation_lines_carry_the_rate_and_the_eta():
    from rich.console import Console

    from crome_ray.summaries import PipelineView

    console = Console(record=True, width=200)
    view = PipelineView(console, ("augment",), sweep=False)
    base = {"of": 300, "pairs": 72, "calls": 82, "calls_per_s": 1.64, "spent_usd": 0.0}
    view.augment_progress({**base, "examples": 36, "eta_s": 110.0, "final": False})
    view.augment_progress({**base, "examples": 300, "eta_s": 0.0, "final": True})
    first, last = console.export_text().splitlines()
    assert first.strip() == "36/300 examples | 72 pairs | 82 calls (1.6/s) | $0.0000 | ETA 1m50s"
    assert last.endswith("| done")


def test_the_evaluations_scoring_lines_carry_the_rate_and_the_eta():
    from crome_ray.evaluate.job import _progress

    lines: list[str] = []
    show = _progress("baseline", lines.append)
    show(250, 1000, 10.0)  # 25 texts/s: 750 left take 30 s
    show(1000, 1000, 40.0)
    assert lines == ["  baseline: 250/1,000 texts scored (25.0/s)  ETA 30s",
                     "  baseline: 1,000/1,000 texts scored (25.0/s)  ETA 0s"]  # fmt: skip
