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

VERBOSE_ENV = "CROME_RAY_VERBOSE"
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
    ray.init(
        address=address or None,
        num_cpus=None if address else num_cpus,
        logging_level=logging.WARNING if quiet else logging.INFO,
        log_to_driver=True,
        include_dashboard=dashboard if not address else None,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False  # we print our own progress
    if quiet:
        quiet_ray_data_logs()
        from crome_ray import quiet as quiet_terminal

        quiet_terminal.route_worker_lines()  # the workers' lines for the user, when the rest is in the log


def quiet_ray_data_logs() -> None:
    """In this process (driver or worker): no Ray Data line per dataset execution, nor its
    notice that progress bars are off (we print our own progress)."""
    if verbose():
        return
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
