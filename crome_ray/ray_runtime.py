"""Connecting an entrypoint to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a
local one on a laptop. Only entrypoints call this; library functions expect Ray to be up."""

from __future__ import annotations

import logging
import os


def connect(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """``dashboard``: start a local cluster with its dashboard, which serves Ray's state API.
    Ray Train needs that API (its placement-group cleaner polls it, warning every second
    without it); the oracle job does not, and saves the CPU."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address or None,
        num_cpus=None if address else num_cpus,
        logging_level=logging.WARNING,
        log_to_driver=True,
        include_dashboard=dashboard if not address else None,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False  # we print our own progress
    quiet_ray_data_logs()


def quiet_ray_data_logs() -> None:
    """In this process (driver or worker): no Ray Data line per dataset execution, nor its
    notice that progress bars are off (we print our own progress)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
