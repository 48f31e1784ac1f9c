"""The driver's freed heap goes back to the operating system when the stream loop asks."""

import sys

import pytest

from crome_ray.heap import Trimmer, release_free_memory


def anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_scattered_between_live_objects_is_handed_back():
    # 60k strings of 2 KiB (malloc's, not pymalloc's), one in 50 kept: the free pages lie
    # between live ones, where a plain free() leaves them resident
    blobs = [bytes(2048 + i % 7) for i in range(60_000)]
    keep = blobs[::50]
    del blobs
    before = anon_kib()
    assert release_free_memory()
    after = anon_kib()
    assert before - after > 60 * 1024, f"{before} KiB -> {after} KiB"
    assert len(keep) == 1200  # the live ones stay


def test_the_trimmer_trims_at_most_once_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr("crome_ray.heap.release_free_memory", lambda: calls.append(1))
    clock = iter([0.0, 0.5, 1.0, 2.1, 2.2, 4.0, 4.5, 4.6])
    monkeypatch.setattr("crome_ray.heap.time.monotonic", lambda: next(clock))
    t = Trimmer(every_s=2.0)  # starts at 0.0
    for _ in range(3):  # 0.5, 1.0: too soon; 2.1: trims (and restarts the interval at 2.2)
        t.tick()
    assert calls == [1]
    t.tick()  # 4.0: 1.8 s after the last, too soon
    assert calls == [1]
    t.tick()  # 4.5
    assert calls == [1, 1]
