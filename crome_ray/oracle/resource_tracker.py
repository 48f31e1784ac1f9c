"""Python's multiprocessing resource tracker in a process that holds a local vLLM engine: an
unregistration for a tracker that Ray has already killed is dropped, not sent to a new one.

Why: when an actor exits, Ray's core worker kills the actor's child processes *before* it
calls the actor's ``__ray_shutdown__``. In Ray 2.60, ``core_worker_shutdown_executor.cc`` logs
"Try killing all child processes of this worker as it exits", and the Python hook runs 12 to
19 ms later (seen in the oracle actor's logs). The children it kills are vLLM's engine-core
process and the resource tracker. It does not kill the engine core's own child, vLLM's
executor worker. That worker notices that its parent is gone and shuts down. It unlinks its
shared memory (``shm_broadcast.MessageQueue.__del__``) and frees its semaphores, and each
unregistration finds the tracker dead. The standard library then starts a new tracker,
warns "resource_tracker: process died unexpectedly, relaunching", and sends it the
unregistration. The new tracker has never heard of that name, and it prints
``KeyError: '/psm_…'`` and ``KeyError: '/mp-…'`` tracebacks. They appear after a run that
succeeded and are read as a crash. (A stack printed at the relaunch showed that it happened
in the executor worker, orphaned, not in the actor.)

So the guard must run in vLLM's own processes. It is installed there through vLLM's plugin
mechanism, which is how vLLM runs code in each of its processes: the
``vllm.general_plugins`` entry point in pyproject.toml, loaded by the engine core and by
every worker. The oracle backend also installs it in the actor when it builds the engine.

Nothing is lost by dropping the message. An unregistration tells the tracker that the
resource is already cleaned up, and a dead tracker has nothing left to clean. A
*registration* is still sent as before: it starts a new tracker when the old one has died,
warning included, so a resource made after such a death is still cleaned if the process
crashes. The shutdown order is Ray's, not ours, and the engine is shut down at the first
hook Ray gives (``ActorLoop.close_at_exit`` in ``oracle.stage``), so this is the narrowest fix
in reach.
"""

from __future__ import annotations

import threading
from multiprocessing import resource_tracker

_lock = threading.Lock()
_installed = False


def drop_unregistrations_after_the_tracker_dies() -> None:
    """Install the guard in this process (once; later calls do nothing)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    tracker = resource_tracker._resource_tracker
    send = tracker._send

    def _send(cmd: str, name: str, rtype: str) -> None:
        if cmd == "UNREGISTER" and tracker._fd is not None and not tracker._check_alive():
            return  # killed with this process's children: it has nothing left to clean up
        send(cmd, name, rtype)

    tracker._send = _send
