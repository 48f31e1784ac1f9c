"""How long is left: an estimate from the rate measured so far, and its text for a progress line.

Pure functions: the training workers' step lines and the driver's views use them alike."""

from __future__ import annotations


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the rate measured so far (``done`` units in ``elapsed`` seconds); None
    before anything is done or when the measure is empty; 0 once ``total`` is reached."""
    if total <= 0 or done >= total:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_text(done: float, total: float, elapsed: float) -> str:
    """``ETA 1m20s`` from the measured rate."""
    return f"ETA {duration(eta_seconds(done, total, elapsed))}"
