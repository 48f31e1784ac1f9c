"""Quota arithmetic for the governor: requests, input tokens and output tokens per window. Pure.

Written by hand because no library does what a cluster-wide quota needs: aiolimiter
and friends pace one process, and token buckets allow a full bucket of burst, which a
provider counting a sliding window answers with 429s. Here each limit is an exact
sliding window (what was granted in the last ``window + slack`` seconds never
exceeds the limit), plus a steady pacer (GCRA) so grants are spread out rather than
spent in a burst at the window's start. A 429 that got through anyway (another
client on the same key, a provider that counts differently) scales every limit down
by ``backoff``; the scale climbs back to 1 over ``recovery_s``.

Output tokens are reserved at their maximum and settled at the actual count, so the
unused part is returned to the window.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from crome_ray.oracle.config import QuotaConfig


class SlidingWindow:
    """The amount granted in the last ``window`` seconds, kept under ``limit``."""

    def __init__(self, limit: float, window: float):
        self.limit, self.window = float(limit), float(window)
        self._events: deque[list[float]] = deque()  # [time, amount], amounts may be settled later
        self.total = 0.0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            self.total -= self._events.popleft()[1]

    def wait(self, amount: float, now: float, limit: float | None = None) -> float:
        """Seconds until ``amount`` more fits (0: it fits now)."""
        limit = self.limit if limit is None else limit
        self._expire(now)
        if self.total + amount <= limit:
            return 0.0
        if amount > limit:
            return float("inf")  # can never fit at the current scale
        excess, freed = self.total + amount - limit, 0.0
        for t, a in self._events:
            freed += a
            if freed >= excess:
                return max(t + self.window - now, 1e-3)
        return self.window

    def add(self, amount: float, now: float) -> list[float]:
        event = [now, float(amount)]
        self._events.append(event)
        self.total += amount
        return event

    def adjust(self, event: list[float], new_amount: float, now: float) -> None:
        """Settle a grant at its actual amount (if it is still inside the window)."""
        self._expire(now)
        if event[0] > now - self.window:  # still counted in total
            self.total += new_amount - event[1]
        event[1] = float(new_amount)


@dataclass
class Grant:
    id: int
    input_tokens: int
    output_tokens: int
    events: tuple[list[float], list[float], list[float] | None]


class RateLimiter:
    def __init__(self, quota: QuotaConfig, clock: Callable[[], float] = time.monotonic):
        self.q, self.clock = quota, clock
        span = quota.window_s + quota.window_slack_s
        self.requests = SlidingWindow(quota.rpm, span)
        self.input = SlidingWindow(quota.input_tpm, span)
        self.output = SlidingWindow(quota.output_tpm, span) if quota.output_tpm else None
        self.in_flight = 0
        self.scale = 1.0
        self._scaled_at = clock()
        self._tat = clock()  # GCRA theoretical arrival time of the next request
        self._ids = itertools.count(1)
        self.throttles = 0
        # what the last ``wait`` was held back by: "in_flight", "pace", "requests", "input",
        # "output" (None: nothing). Only a call's end can free "in_flight" or token room early.
        self.blocked_by: str | None = None

    def _current_scale(self, now: float) -> float:
        if self.scale < 1.0:
            self.scale = min(1.0, self.scale + (now - self._scaled_at) / self.q.recovery_s)
        self._scaled_at = now
        return self.scale

    def wait(self, input_tokens: int, output_tokens: int) -> float:
        """Seconds until a call of this size may start (0: now). ``inf`` if it never can."""
        now = self.clock()
        s = self._current_scale(now)
        if self.in_flight >= self.q.max_in_flight:
            self.blocked_by = "in_flight"
            return 0.05  # woken earlier by a settle in the governor
        interval = (self.q.window_s + self.q.window_slack_s) / (self.q.rpm * s)
        tolerance = interval * max(1.0, self.q.max_in_flight / 8)
        waits = {
            "pace": max(0.0, self._tat - tolerance - now),
            "requests": self.requests.wait(1, now, self.q.rpm * s),
            "input": self.input.wait(input_tokens, now, self.q.input_tpm * s),
        }
        if self.output is not None:
            waits["output"] = self.output.wait(output_tokens, now, self.q.output_tpm * s)
        self.blocked_by = max(waits, key=waits.__getitem__)
        longest = waits[self.blocked_by]
        if longest <= 0:
            self.blocked_by = None
        return longest

    def acquire(self, input_tokens: int, output_tokens: int) -> Grant | float:
        """A grant, or the seconds to wait before asking again."""
        w = self.wait(input_tokens, output_tokens)
        if w > 0:
            return w
        now = self.clock()
        interval = (self.q.window_s + self.q.window_slack_s) / (self.q.rpm * self.scale)
        self._tat = max(self._tat, now) + interval
        self.in_flight += 1
        events = (
            self.requests.add(1, now),
            self.input.add(input_tokens, now),
            self.output.add(output_tokens, now) if self.output is not None else None,
        )
        return Grant(next(self._ids), input_tokens, output_tokens, events)

    def settle(self, grant: Grant, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """The call ended; count what it really used (None: keep the reservation)."""
        now = self.clock()
        self.in_flight -= 1
        if input_tokens is not None:
            self.input.adjust(grant.events[1], input_tokens, now)
        if output_tokens is not None and grant.events[2] is not None:
            self.output.adjust(grant.events[2], output_tokens, now)

    def throttled(self) -> None:
        """The provider answered 429 although we paced: slow everyone down."""
        now = self.clock()
        self.scale = max(0.05, self._current_scale(now) * self.q.backoff)
        self._scaled_at = now
        self.throttles += 1

    def max_fitting(self) -> tuple[float, float]:
        return self.q.rpm * self.scale, self.q.input_tpm * self.scale
