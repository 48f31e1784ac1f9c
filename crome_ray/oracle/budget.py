"""The dollar cap, in integer micro-dollars. Pure arithmetic; the governor persists what
``persist`` is given.

Invariant: settled + reserved <= cap at every moment, and each call's actual cost is
at most what was reserved for it (its worst case), so actual spend <= cap. Every amount
is an ``int`` of micro-dollars (see ``oracle.pricing``), so the comparisons are exact: a
float here would be refused, not rounded.

Crash safety: before a reservation takes total commitments past the persisted
``allocated`` figure, a new, higher allocation (one ``chunk`` ahead) is persisted
first. A resumed run counts the last persisted allocation as already spent, which is
an upper bound on what the crashed run could have spent; it wastes at most one chunk
of unused allowance. A clean close persists the exact settled figure instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _micros(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be whole micro-dollars (int), got {value!r}")
    if value < 0:
        raise ValueError(f"{what} cannot be negative (got {value})")
    return value


@dataclass(frozen=True)
class Reservation:
    amount: int  # micro-dollars


class Budget:
    def __init__(
        self,
        cap: int,
        chunk: int,
        spent_before: int = 0,
        persist: Callable[[int, int], None] | None = None,
    ):
        self.cap = _micros(cap, "the cap")
        self.chunk = _micros(chunk, "the allocation chunk")
        self.spent_before = min(_micros(spent_before, "the earlier spend"), self.cap)  # upper bound
        self.settled = 0
        self.reserved = 0
        self.allocated = self.spent_before
        self.calls = 0
        self.denied = 0
        self.overruns = 0
        self._persist = persist or (lambda allocated, settled: None)

    @property
    def committed(self) -> int:
        return self.spent_before + self.settled + self.reserved

    @property
    def spent(self) -> int:
        return self.spent_before + self.settled

    @property
    def remaining(self) -> int:
        return max(self.cap - self.committed, 0)

    def reserve(self, worst_case: int) -> Reservation | None:
        """Reserve a call's worst-case cost; None if that could cross the cap."""
        _micros(worst_case, "a cost")
        if self.committed + worst_case > self.cap:
            self.denied += 1
            return None
        if self.committed + worst_case > self.allocated:
            self.allocated = min(self.cap, self.committed + worst_case + self.chunk)
            self._persist(self.allocated, self.spent)  # before the money can be spent
        self.reserved += worst_case
        return Reservation(worst_case)

    def settle(self, reservation: Reservation, actual: int) -> None:
        """The call ended and cost ``actual`` (0 if it was never billed).

        A cost above the reservation means the worst-case estimate was wrong; it is
        counted in ``overruns`` (and reported) rather than hidden.
        """
        _micros(actual, "a cost")
        if actual > reservation.amount:
            self.overruns += 1
        self.reserved -= reservation.amount
        self.settled += actual
        self.calls += 1

    def close(self) -> None:
        """Nothing is in flight any more: persist the exact spend as the allocation."""
        if self.reserved == 0:
            self.allocated = self.spent
        self._persist(self.allocated, self.spent)
