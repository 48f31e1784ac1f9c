"""A quiet terminal that loses nothing: crome-ray's own lines on the terminal, everything else in a
log file.

Ray, vLLM, transformers and the processes they start write warnings, progress bars and, at
shutdown, tracebacks that say nothing a user can act on (a resource tracker's ``KeyError`` after a
run that succeeded reads as a crash). Filtering their lines one pattern at a time misses the next
release's; this moves the whole process's stdout and stderr (file descriptors 1 and 2, which every
child process inherits, C++ code included) into the log, and points crome-ray's two consoles at
the terminal the command started with. Ray streams its workers' output to the driver, which now
writes it to the log; a line a worker marks as ours (``for_the_user``: a training step's progress)
is printed on the terminal as well, without Ray's process prefix.

``--verbose`` (or ``CROME_RAY_VERBOSE=1``, e.g. in a ``ray job submit`` runtime env) leaves the
streams alone. Under a test runner that has replaced ``sys.stdout`` nothing is redirected. A bug
(an exception that is not a ``CromeError``) still ends with one line on the terminal naming the log
that holds its traceback.

Hand-written because no library does it: logging's handlers see only Python's ``logging``, not C++
writes, ``print`` or child processes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO


class _Console(Protocol):
    file: Any


MARK = "\x1bcrome-ray\x1b "  # starts a worker line meant for the user (escapes: no text starts so)
LOG_ENV = "CROME_RAY_LOG"
HANDLER = "crome_ray_user_lines"


def for_the_user(line: str) -> str:
    """A worker's line marked for the user's terminal (printed with ``print``)."""
    return MARK + line


def user_lines(lines: list[str]) -> list[str]:
    """The lines of a worker's output batch that are marked for the user, unmarked."""
    return [line.split(MARK, 1)[1] for line in lines if MARK in line]


def log_path(folder: Path, now: float | None = None) -> Path:
    """A new log file in ``folder``, named by the time and the process."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now or time.time()))
    return folder / f"crome-ray-{stamp}-{os.getpid()}.log"


@dataclass
class Quiet:
    """The redirection in force: where the hidden output goes, and the terminal's own streams."""

    log: Path
    terminal_out: TextIO
    terminal_err: TextIO
    keepers: list[Callable[[bytes], str]] = field(default_factory=list)  # each writes a copy, gives its URI

    def hidden(self) -> bool:
        """Whether anything went to the log."""
        try:
            return self.log.stat().st_size > 0
        except OSError:
            return False


_active: Quiet | None = None


def start(out_console: _Console, err_console: _Console, log: Path) -> Quiet | None:
    """Send fds 1 and 2 to the log (``CROME_RAY_LOG`` if set, else ``log``); crome-ray's two
    consoles (rich Consoles: stdout's and stderr's) keep the terminal. None (nothing done) when
    the streams are not the process's own (a test runner's capture)."""
    global _active
    if _active is not None:
        return _active
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return None
    path = Path(os.environ.get(LOG_ENV) or log)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    out_console.file = out
    err_console.file = err
    _active = Quiet(path, out, err)
    return _active


def route_worker_lines() -> None:
    """On the driver, after ``ray.init``: the workers' lines marked for the user go to the
    terminal too (Ray's own handler keeps writing every line, now into the log)."""
    if _active is None:
        return
    from ray._private.worker import global_worker_stdstream_dispatcher

    terminal = _active.terminal_out

    def show(data: dict[str, Any]) -> None:
        for line in user_lines(list(data.get("lines") or [])):
            print(line, file=terminal, flush=True)

    global_worker_stdstream_dispatcher.remove_handler(HANDLER)
    global_worker_stdstream_dispatcher.add_handler(HANDLER, show)


def keep_in(write: Callable[[bytes], str]) -> None:
    """At the end, hand the log's bytes to ``write`` (which stores a copy with a run and returns
    where: the caller knows the run's storage; this floor does not)."""
    if _active is not None:
        _active.keepers.append(write)


def finish(failed: BaseException | None = None) -> None:
    """The closing lines: a bug's one-line summary, and where the hidden output is. The streams
    stay redirected: what the libraries print while the process exits goes to the log too."""
    q = _active
    if q is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if failed is not None:
        print(
            f"error: {type(failed).__name__}: {failed} (a bug in crome-ray or a library: its traceback is in "
            f"{q.log}; --verbose shows it here)",
            file=q.terminal_err,
        )
    copies = []
    for write in q.keepers:
        try:
            copies.append(write(q.log.read_bytes()))
        except Exception as e:  # the log stays where it is; say so
            print(f"could not copy the log into the run: {e}", file=q.terminal_err)
    if not q.hidden():
        if not os.environ.get(LOG_ENV):
            q.log.unlink(missing_ok=True)  # nothing was hidden: no empty file left behind
        return
    where = copies[0] if copies else str(q.log)
    print(f"log: {where} (Ray's and the libraries' own output; --verbose shows it here)", file=q.terminal_out)
