"""Connecting an entrypoint to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a
local one on a laptop. Only entrypoints call this; library functions expect Ray to be up."""

from __future__ import annotations

import logging
import os


def connect(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address or None,
        num_cpus=None if address else num_cpus,
        logging_level=logging.WARNING,
        log_to_driver=True,
        include_dashboard=False if not address else None,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False  # we print our own progress
