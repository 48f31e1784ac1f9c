"""A local engine's clean-up after Ray killed its processes prints no tracebacks
(``crome_ray.oracle.resource_tracker``, issue 30).

At an actor's exit Ray kills the actor's children, the resource tracker among them, before the
actor's shutdown hook runs. vLLM's executor worker, a grandchild that survives, then unlinks its
shared memory. The standard library starts a new tracker for that unregistration, which does not
know the name and prints ``KeyError: '/psm_…'``. That was seen in every augmentation's log with the
local oracle. Here it is reproduced in plain processes: a parent spawns a child, which starts the
parent's tracker and hands the child its pipe, as vLLM's engine does for its worker; the child makes
shared memory; the parent's tracker is SIGKILLed; the child unlinks the memory. All of stderr is read."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCENARIO = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    from multiprocessing import resource_tracker, shared_memory

    def guard():
        GUARD

    def worker(conn, register_after):  # vLLM's executor worker: it made the memory, it unlinks it
        guard()
        shm = shared_memory.SharedMemory(create=True, size=1024)  # registered with the parent's tracker
        conn.send(shm.name)
        conn.recv()  # the tracker is dead now
        shm.close()
        shm.unlink()  # vLLM's MessageQueue.__del__
        if register_after:  # a resource made after the death: still tracked
            shared_memory.SharedMemory(create=True, size=64).unlink()
        print("unlinked", flush=True)

    if __name__ == "__main__":
        guard()
        ctx = mp.get_context("spawn")
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=worker, args=(child_end, REGISTER))
        child.start()  # starts this process's tracker; the child inherits its pipe
        name = parent_end.recv()
        tracker = resource_tracker._resource_tracker
        if KILL_TRACKER:
            os.kill(tracker._pid, signal.SIGKILL)  # what Ray does at the actor's exit
            os.waitpid(tracker._pid, 0)
        parent_end.send("go")
        child.join()
        print("name left:", os.path.exists("/dev/shm/" + name.lstrip("/")), flush=True)
        time.sleep(0.5)  # a relaunched tracker prints as it reads the message
    """
)


GUARD = "from crome_ray.oracle.resource_tracker import drop_unregistrations_after_the_tracker_dies as g; g()"


def run(tmp_path, guard: str, register_after: bool = False, kill: bool = True) -> subprocess.CompletedProcess:
    script = tmp_path / "scenario.py"  # a file: the spawned child imports its function from it
    code = SCENARIO.replace("GUARD", guard).replace("REGISTER", str(register_after))
    code = code.replace("KILL_TRACKER", str(kill))
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def test_without_the_guard_the_childs_unlink_relaunches_a_tracker_that_prints_a_keyerror(tmp_path):
    """The failure as it was: the reproduction is faithful."""
    out = run(tmp_path, "pass")
    assert "unlinked" in out.stdout, out.stderr
    assert "process died unexpectedly, relaunching" in out.stderr
    assert "KeyError: '/psm_" in out.stderr and "Traceback" in out.stderr


def test_with_the_guard_the_unlink_is_quiet_and_the_memory_is_still_freed(tmp_path):
    out = run(tmp_path, GUARD)
    assert "unlinked" in out.stdout and "name left: False" in out.stdout, out.stderr
    assert out.stderr == ""  # no warning, no traceback


def test_a_registration_after_the_death_still_starts_a_new_tracker(tmp_path):
    """Only unregistrations are dropped: a resource made afterwards is still tracked, so the
    relaunch (and its warning) happen as before."""
    out = run(tmp_path, GUARD, register_after=True)
    assert "unlinked" in out.stdout, out.stderr
    assert "process died unexpectedly, relaunching" in out.stderr
    assert "KeyError" not in out.stderr  # the new tracker knew the name it was told to forget


def test_a_live_tracker_is_still_told_so_it_does_not_clean_up_the_memory_again_at_exit(tmp_path):
    """Only a dead tracker's unregistrations are dropped: a guard that dropped them all would leave
    a live tracker believing the memory leaked (its warning at exit, seen with such a guard)."""
    out = run(tmp_path, GUARD, kill=False)
    assert "unlinked" in out.stdout and "name left: False" in out.stdout, out.stderr
    assert out.stderr == ""


@pytest.mark.slow  # imports vLLM (seconds)
def test_vllm_installs_the_guard_in_each_of_its_processes_through_its_plugin_entry_point(tmp_path):
    """vLLM's engine core and workers run ``load_general_plugins()`` at start; the guard is one."""
    out = run(tmp_path, "from vllm.plugins import load_general_plugins; load_general_plugins()")
    assert "unlinked" in out.stdout and "name left: False" in out.stdout, out.stderr
    assert "KeyError" not in out.stderr and "relaunching" not in out.stderr, out.stderr
