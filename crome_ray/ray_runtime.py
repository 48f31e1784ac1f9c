"""Connecting an entrypoint to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a
local one on a laptop. Only entrypoints call this; library functions expect Ray to be up.

A quiet terminal by default: the user sees our progress lines and tables, real errors and
Ray's own progress where it helps. Ray's INFO lines, its token-auth notice, Ray Data's
per-execution lines in every process (``RAY_DATA_LOG_LEVEL``) and deprecation warnings
raised inside Ray's own actors are off; ``CROME_RAY_VERBOSE=1`` (``crome-ray --verbose``)
shows everything. Worker processes of a local cluster inherit the driver's environment;
on a cluster, ``cluster/runtime_env.yaml`` sets the same variables.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

VERBOSE_ENV = "CROME_RAY_VERBOSE"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # Ray's: the port a head started by ray.init gives its GCS
QUIET_WORKER_ENV = {
    "RAY_DATA_LOG_LEVEL": "WARNING",  # Ray Data's lines in SplitCoordinator and other actors
    "PYTHONWARNINGS": "ignore::DeprecationWarning",  # Ray's own deprecations inside its actors
    "VLLM_LOGGING_LEVEL": "WARNING",  # a local engine's start-up (its config, ~40 lines) in the actors
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # "Loading weights" bars of every model an actor loads
}


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def connect(num_cpus: int | None = None, *, dashboard: bool = False) -> None:
    """``dashboard``: start a local cluster with its dashboard, which serves Ray's state API.
    Ray Train needs that API (its placement-group cleaner polls it, warning every second
    without it); the oracle job does not, and saves the CPU."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet = not verbose()
    if quiet:
        for key, value in QUIET_WORKER_ENV.items():
            os.environ.setdefault(key, value)
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    local = {} if address else own_address()
    try:
        ray.init(
            address=address or None,
            num_cpus=None if address else num_cpus,
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=True,
            include_dashboard=dashboard if not address else None,
            **local,
        )
    finally:
        os.environ.pop(GCS_PORT_ENV, None)  # this head's: not for a child process's own ray.init
    ray.data.DataContext.get_current().enable_progress_bars = False  # we print our own progress
    if quiet:
        quiet_ray_data_logs()
        from crome_ray import quiet as quiet_terminal

        quiet_terminal.route_worker_lines()  # the workers' lines for the user, when the rest is in the log


def own_address() -> dict[str, Any]:
    """``ray.init``'s arguments for a local cluster that its own processes can find. Ray Train's
    placement-group cleaner (and anything else in a worker that calls Ray's state API) looks the
    cluster up by its address, and a cluster started by ``ray.init`` records none: with another
    Ray instance on the machine (a notebook's, a second job's) the lookup fails ("Found multiple
    active Ray instances") or finds the other one (the last ``ray start``). So the GCS gets a port
    chosen here (``RAY_GCS_SERVER_PORT``, read by ``ray.init`` when it starts a head) and every
    worker of the job the address, in ``RAY_ADDRESS``."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    os.environ[GCS_PORT_ENV] = str(port)  # read by this process's ray.init only (connect removes it)
    return {"runtime_env": {"env_vars": {"RAY_ADDRESS": f"127.0.0.1:{port}"}}}


def cluster_nodes() -> list[dict[str, Any]] | None:
    """The nodes of the Ray cluster this process is connected to, alive and dead, as
    ``ray.nodes()`` lists them; None when it is connected to none (Ray is never started here)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.nodes()


def on_this_node():
    """A scheduling strategy that keeps an actor on this process's node (hard): where a run keeps
    its state (the oracle governors, the augmentation's sinks), which dies with the driver anyway."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def quiet_ray_data_logs() -> None:
    """In this process (driver or worker): no Ray Data line per dataset execution, nor its
    notice that progress bars are off (we print our own progress)."""
    if verbose():
        return
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
