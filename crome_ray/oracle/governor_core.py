"""The governor's decisions, as plain Python: may this call start, and what did it cost? Pure.

No asyncio, no Ray, no storage: the clock and the ledger's store are injected, so the
tests drive it with a fake clock and a dict. ``oracle.governor`` wraps it for many
waiting callers (asyncio) and for the cluster (a Ray actor). It holds, for the whole run:

- the quota (``limits.RateLimiter``): a call starts only when it fits the provider's
  RPM / input-TPM / output-TPM windows and the in-flight cap;
- the dollar cap (``budget.Budget``, integer micro-dollars): the call's worst-case cost
  is reserved first, with the allowance persisted in the run's ledger before it can be
  spent;
- the cache index: a request whose answer is already stored is a hit, never a call;
- leases on keys in flight: a second worker asking the same question waits for the
  first answer instead of paying for it again. A lease left by a killed worker
  expires, and its reservation is then settled at the worst case (it may have been
  billed); a worker known to be gone sooner (``abandon``: silent past ``silence_seconds``
  though it holds calls) has its leases settled the same way at once, so that a second
  worker asking the same questions does not wait for the lease to run out. Every lease
  lives the same ``lease_s`` on a clock that never goes back, so leases expire in the
  order they were granted: they are kept in that order, and
  expiring them looks only at the oldest (O(1) per call, not O(calls in flight);
  ``bench/governor_decisions.py`` measured 27 ms per call at 8,000 in flight before).

The ledger document holds micro-dollars as integers (``allocated_micros``,
``spent_micros``, ``cap_micros``). A ledger written before that (dollars as floats,
``allocated``) is still read, rounded up to the next micro-dollar: a resumed run may
count up to one micro-dollar more as spent, never less.
"""

from __future__ import annotations

import enum
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from crome_ray.oracle.budget import Budget, Reservation
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.limits import Grant, RateLimiter
from crome_ray.oracle.pricing import micros_to_usd, usd_to_micros

LEDGER_FORMAT = 2
MAX_SILENCE_S = 30.0  # a worker holding calls that is silent this long is presumed gone


def lease_seconds(config: OracleConfig) -> float:
    """How long a call's lease lives: one attempt's longest life, with margin."""
    return config.retry.timeout_s * 1.5 + 2.0


def silence_seconds(config: OracleConfig) -> float:
    """How long a worker with calls queued or in flight may go without an exchange before the
    governor presumes it gone: half a lease, and never more than ``MAX_SILENCE_S``. Not the
    lease itself: a local engine's attempt may last 30 minutes (``oracle.retry.timeout_s``), and
    a second worker asking the same questions would wait that long for a worker that is dead
    (seen on two nodes: a restarted engine's retried batch waited on its dead self's leases)."""
    return min(lease_seconds(config) / 2, MAX_SILENCE_S)


def heartbeat_seconds(config: OracleConfig) -> float:
    """How often a worker holding calls and with nothing else to say exchanges anyway: six
    heartbeats to a silence, so a loop slowed by a loaded machine is not taken for a dead one."""
    return silence_seconds(config) / 6


class Decision(enum.Enum):
    """What the governor answers ``begin``, with the value that goes with it."""

    HIT = "hit"  # answered before: the value is where the answer is cached
    GO = "go"  # start the call: the value is the grant id to settle it with
    WAIT = "wait"  # the quota is full: the value is seconds until it may fit
    BUSY = "busy"  # another caller is asking the same question: seconds to wait for its answer
    BUDGET = "budget"  # the call could cross the dollar cap: it must not be made (value None)
    ERROR = "error"  # to a remote caller: the governor failed (the value says how)


class DocumentStore(Protocol):
    """Where the ledger lives (``oracle.cache.LedgerStore`` on local disk or S3; a dict in tests)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, doc: dict[str, Any]) -> None: ...


def ledger_document(allocated: int, spent: int, cap: int, model: str, updated_at: float) -> dict[str, Any]:
    return {
        "format": LEDGER_FORMAT,
        "allocated_micros": allocated,
        "spent_micros": spent,
        "cap_micros": cap,
        "model": model,
        "updated_at": updated_at,
    }


def allocated_micros(doc: Any, where: str = "the spend ledger") -> int:
    """What an earlier attempt of the run may have spent, from its ledger document."""
    doc = doc if isinstance(doc, dict) else {"not a mapping": doc}
    value = doc.get("allocated_micros")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    legacy = doc.get("allocated")  # a ledger from before micro-dollars: dollars as a float
    if "allocated_micros" not in doc and type(legacy) in (int, float) and 0 <= legacy < math.inf:
        return usd_to_micros(legacy, round_up=True)  # rounded against us
    raise ValueError(
        f"{where} is not a crome-ray spend ledger (expected a whole number 'allocated_micros', "
        f"got {doc!r:.200}); move it aside only if no run with this name has spent anything"
    )


@dataclass
class _Lease:
    key: str
    owner: str
    grant: Grant
    reservation: Reservation
    expires: float


class GovernorCore:
    def __init__(
        self,
        config: OracleConfig,
        ledger: DocumentStore | None = None,
        cached: Iterable[tuple[str, Any, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        """``cached``: (key, location, ...) of every answer already stored; a location is opaque here."""
        self.config, self.clock, self.ledger = config, clock, ledger
        prior = ledger.load() if ledger is not None else None
        where = f"the spend ledger {getattr(ledger, 'uri', '')}".rstrip()
        self.resumed_from = allocated_micros(prior, where) if prior is not None else 0  # micro-dollars
        cap = usd_to_micros(config.budget.cap_usd, round_up=False)
        allocation = config.budget.allocation_usd
        chunk = usd_to_micros(allocation, round_up=True) if allocation is not None else max(cap // 100, 1)
        self.budget = Budget(cap, chunk, spent_before=self.resumed_from, persist=self._persist)
        self.limiter = RateLimiter(config.quota, clock)
        self.index: dict[str, Any] = {key: loc for key, loc, *_ in cached}
        # both in expiry order (oldest first): see the module docstring
        self.leases: OrderedDict[int, _Lease] = OrderedDict()
        self.owner_of: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (owner, lease expiry)
        self.lease_s = lease_seconds(config)
        self.engines: list[dict[str, Any]] = []  # local engines started for this run (model, start-up s)
        self.counts = {
            "hits": 0,
            "grants": 0,
            "throttled": 0,
            "budget_denied": 0,
            "expired_leases": 0,
            "released_grants": 0,  # granted, never delivered to their worker (presumed gone)
            "abandoned_leases": 0,  # delivered to a worker presumed gone: settled at the worst case
            "workers_presumed_gone": 0,
            "invalid_output": 0,
            "failed": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        }

    def _persist(self, allocated: int, spent: int) -> None:
        if self.ledger is not None:
            doc = ledger_document(allocated, spent, self.budget.cap, self.config.model, time.time())
            self.ledger.save(doc)

    def _expire(self, now: float) -> None:
        while self.leases:
            gid, lease = next(iter(self.leases.items()))
            if lease.expires > now:
                break
            # a worker died mid-call: assume the call was billed in full
            self.budget.settle(lease.reservation, lease.reservation.amount)
            self.limiter.settle(lease.grant)
            del self.leases[gid]
            self.counts["expired_leases"] += 1
        while self.owner_of:
            key, (_owner, expires) = next(iter(self.owner_of.items()))
            if expires > now:
                break
            del self.owner_of[key]

    def begin(
        self, key: str, owner: str, est_input: int, max_output: int, worst_micros: int
    ) -> tuple[Decision, Any]:
        """(HIT, location) | (GO, grant id) | (WAIT, seconds) | (BUSY, seconds) | (BUDGET, None)."""
        now = self.clock()
        self._expire(now)
        if key in self.index:
            self.counts["hits"] += 1
            return Decision.HIT, self.index[key]
        holder = self.owner_of.get(key)
        if holder is not None and holder[0] != owner:
            return Decision.BUSY, 0.05
        if self.budget.committed + worst_micros > self.budget.cap:
            self.counts["budget_denied"] += 1
            if holder is not None:
                del self.owner_of[key]  # this owner gives the key up
            return Decision.BUDGET, None
        grant = self.limiter.acquire(est_input, max_output)
        if not isinstance(grant, Grant):
            return Decision.WAIT, grant
        reservation = self.budget.reserve(worst_micros)
        if reservation is None:  # unreachable after the check above; kept for safety
            self.limiter.settle(grant, 0, 0)
            return Decision.BUDGET, None
        self.leases[grant.id] = _Lease(key, owner, grant, reservation, now + self.lease_s)
        self.owner_of[key] = (owner, now + self.lease_s)
        self.owner_of.move_to_end(key)  # the same owner asking again renews its lease
        self.counts["grants"] += 1
        return Decision.GO, grant.id

    def finish(
        self,
        grant_id: int,
        cost_micros: int,
        input_tokens: int,
        output_tokens: int,
        location: Any,
        final: bool = True,
    ) -> None:
        """An answer came back (billed). ``location`` is where it is cached (None: not usable)."""
        lease = self.leases.pop(grant_id, None)
        if lease is None:
            return  # expired meanwhile and already settled at the worst case
        self.budget.settle(lease.reservation, cost_micros)
        self.limiter.settle(lease.grant, input_tokens, output_tokens)
        self.counts["input_tokens"] += input_tokens  # every billed answer's, invalid ones too
        self.counts["output_tokens"] += output_tokens
        if location is not None:
            self.index[lease.key] = location
        else:
            self.counts["invalid_output"] += 1
        if final:
            self.owner_of.pop(lease.key, None)

    def fail(
        self, grant_id: int, throttled: bool = False, final: bool = False, maybe_billed: bool = False
    ) -> None:
        """The attempt got no answer. An error answer (429, 5xx) is not billed; a timeout or a
        broken connection may have been (the provider may finish the call), so it is settled
        at its worst case."""
        lease = self.leases.pop(grant_id, None)
        if lease is None:
            return
        self.budget.settle(lease.reservation, lease.reservation.amount if maybe_billed else 0)
        self.limiter.settle(lease.grant)
        if throttled:
            self.limiter.throttled()
            self.counts["throttled"] += 1
        if final:
            self.counts["failed"] += 1
            self.owner_of.pop(lease.key, None)

    def release(self, grant_id: int) -> None:
        """A grant its worker never received: nothing was sent, nothing billed. Its reservation and
        in-flight slot come back, and its key is free for another worker."""
        self._end(grant_id, billed=False, count="released_grants")

    def abandon(self, grant_id: int) -> None:
        """A call whose worker is presumed gone: settled at once as an expired lease is (at the
        worst case: it may have been sent and billed), and its key free for another worker. Its
        answer, if the worker was only slow and sends it after all, is ignored (``finish``)."""
        self._end(grant_id, billed=True, count="abandoned_leases")

    def _end(self, grant_id: int, billed: bool, count: str) -> None:
        """A lease ended for its worker: settled at its worst case if it may have been billed, else
        at nothing; its slot back, and its key free if that lease still holds it."""
        lease = self.leases.pop(grant_id, None)
        if lease is None:
            return
        self.budget.settle(lease.reservation, lease.reservation.amount if billed else 0)
        self.limiter.settle(lease.grant)
        if self.owner_of.get(lease.key, (None,))[0] == lease.owner:
            del self.owner_of[lease.key]
        self.counts[count] += 1

    def stats(self) -> dict[str, Any]:
        """Counts and money; ``*_micros`` are exact, ``*_usd`` the same in dollars for display."""
        b = self.budget
        return {
            **self.counts,
            "spent_micros": b.spent,
            "reserved_micros": b.reserved,
            "cap_micros": b.cap,
            "resumed_from_micros": self.resumed_from,
            "spent_usd": micros_to_usd(b.spent),
            "settled_usd": micros_to_usd(b.settled),
            "reserved_usd": micros_to_usd(b.reserved),
            "cap_usd": micros_to_usd(b.cap),
            "resumed_from_usd": micros_to_usd(self.resumed_from),
            "overruns": b.overruns,
            "cached_keys": len(self.index),
            "in_flight": len(self.leases),
            "rate_scale": self.limiter.scale,
            "engines": list(self.engines),
        }

    def close(self) -> dict[str, Any]:
        self.budget.close()
        return self.stats()
