"""The dollar cap. Pure arithmetic; the governor persists what ``persist`` is given.

Invariant: settled + reserved <= cap at every moment, and each call's actual cost is
at most what was reserved for it (its worst case), so actual spend <= cap.

Crash safety: before a reservation takes total commitments past the persisted
``allocated`` figure, a new, higher allocation (one ``chunk`` ahead) is persisted
first. A resumed run counts the last persisted allocation as already spent, which is
an upper bound on what the crashed run could have spent; it wastes at most one chunk
of unused allowance. A clean close persists the exact settled figure instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reservation:
    amount: float


class Budget:
    def __init__(
        self,
        cap: float,
        chunk: float,
        spent_before: float = 0.0,
        persist: Callable[[float, float], None] | None = None,
    ):
        if spent_before > cap + 1e-12:
            spent_before = cap
        self.cap, self.chunk = cap, chunk
        self.spent_before = spent_before  # upper bound of what earlier attempts spent
        self.settled = 0.0
        self.reserved = 0.0
        self.allocated = spent_before
        self.calls = 0
        self.denied = 0
        self.overruns = 0
        self._persist = persist or (lambda allocated, settled: None)

    @property
    def committed(self) -> float:
        return self.spent_before + self.settled + self.reserved

    @property
    def spent(self) -> float:
        return self.spent_before + self.settled

    @property
    def remaining(self) -> float:
        return max(self.cap - self.committed, 0.0)

    def reserve(self, worst_case: float) -> Reservation | None:
        """Reserve a call's worst-case cost; None if that could cross the cap."""
        if worst_case < 0:
            raise ValueError("a cost cannot be negative")
        if self.committed + worst_case > self.cap:
            self.denied += 1
            return None
        if self.committed + worst_case > self.allocated:
            self.allocated = min(self.cap, self.committed + worst_case + self.chunk)
            self._persist(self.allocated, self.spent)  # before the money can be spent
        self.reserved += worst_case
        return Reservation(worst_case)

    def settle(self, reservation: Reservation, actual: float) -> None:
        """The call ended and cost ``actual`` (0 if it was never billed).

        A cost above the reservation means the worst-case estimate was wrong; it is
        counted in ``overruns`` (and reported) rather than hidden.
        """
        if actual > reservation.amount + 1e-12:
            self.overruns += 1
        self.reserved -= reservation.amount
        self.settled += actual
        self.calls += 1

    def close(self) -> None:
        """Nothing is in flight any more: persist the exact spend as the allocation."""
        if self.reserved <= 1e-12:
            self.allocated = self.spent
        self._persist(self.allocated, self.spent)
