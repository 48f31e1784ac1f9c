"""Give the driver's freed heap back to the operating system while a stream runs.

A driver that routes a stream of rows (the augmentation's and the oracle job's) makes and
frees Python objects of every size, from its own thread and from Ray Data's prefetch
threads. glibc's allocator keeps most of what is freed inside its heaps and arenas unless
it sits at a heap's very top, so the driver's resident memory creeps up with the data
although what it holds does not (measured: ``bench/augment_memory.py``, and the note in
docs/benchmarks.md). ``malloc_trim(0)`` hands back every whole free page of every arena.
Neither Ray nor pyarrow does this for a driver's heap (pyarrow's ``release_unused`` covers
only its own pool, which is called here too), so it is these few lines. Elsewhere (musl,
macOS) there is nothing to call and the calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from functools import cache

# at most this often: a trim walks every arena (milliseconds on a driver's few hundred MiB)
EVERY_S = 2.0


@cache
def _libc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Free pages back to the OS now; True when glibc's ``malloc_trim`` ran."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _libc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Trimmer:
    """Calls ``release_free_memory`` from a loop, at most every ``every_s`` seconds."""

    def __init__(self, every_s: float = EVERY_S):
        self.every_s, self._last = every_s, time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._last >= self.every_s:
            release_free_memory()
            self._last = time.monotonic()
