"""The cluster-wide governor's shell: many waiting callers (asyncio), one Ray actor per run,
and the worker's side of it.

Written by hand because nothing in the field does this across a cluster: Ray Data
LLM's HTTP stage paces each actor on its own (N actors overshoot N-fold), curator
limits one process, distilabel has no limiter. Every decision (quota, dollar cap,
cache hits, leases) is ``governor_core.GovernorCore``'s; this module only decides when
to ask it and how its answers travel:

- ``LocalGovernor``: the core behind an async FIFO, in this process (one-process runs, tests);
- ``GovernorActorImpl`` / ``governor_actor``: the same as a Ray actor every oracle worker asks;
- ``RemoteGovernor``: a worker's handle on that actor, one batched round trip per tick.

Decisions cross Ray as ``governor_core.Decision`` members (an enum pickles by reference).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from typing import Any

from crome_ray.oracle.cache import LedgerStore
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.governor_core import Decision, GovernorCore, silence_seconds

# The shortest sleep of a waiting queue. At the quota, the window frees one request per
# 1/rate seconds; waking for each would be a wake-up per grant. Grants made up to 50 ms
# late cost nothing (a remote worker collects its decisions once per 0.2 s tick) and
# come in small batches, a few per wake-up.
MIN_WAIT_S = 0.05


class _Mailbox:
    """Where a queued decision goes: a list the worker's next ``exchange`` empties. It has the
    two methods of a future the queue uses, without an asyncio task per request."""

    __slots__ = ("args", "box", "request_id")

    def __init__(self, box: list, request_id: int, args: tuple):
        self.box, self.request_id, self.args = box, request_id, args

    def done(self) -> bool:
        return False

    def set_result(self, decision: tuple[Decision, Any]) -> None:
        self.box.append((self.request_id, *decision, time.monotonic(), self.args))

    def set_exception(self, e: BaseException) -> None:  # sent on as a decision: no exception crosses Ray
        self.set_result((Decision.ERROR, f"the oracle governor failed: {e!r}"))


class _AsyncFacade:
    """Async permissions for many waiting callers, granted first come, first served.

    ``begin`` answers at once when it can (a cache hit, a free slot within the quota);
    otherwise the caller joins a queue that one dispatcher serves in order, sleeping
    until the quota allows the head or a call ends. This keeps the work per grant
    constant: waking every waiter at each chance would cost O(waiters) per grant.
    A caller whose key is in flight elsewhere is parked until a call ends. A call's end
    wakes the dispatcher only when it can let the head go sooner (the in-flight cap or a
    token window held it, or parked callers came back); a wait for the request window
    or the pacer is a timer, not a poll.
    """

    core: GovernorCore

    def _setup(self) -> None:
        self._queue: collections.deque = collections.deque()
        self._parked: list = []
        self._wake: asyncio.Future | None = None
        self._dispatcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (in-process use): its own queue
            self._setup()
            self._loop = loop

    def _now_or_queue(self, args: tuple, waiter) -> tuple[Decision, Any] | None:
        """The decision if it can be made now; otherwise ``waiter`` joins the queue."""
        if args[0] in self.core.index or not self._queue:
            kind, value = self.core.begin(*args)
            if kind is not Decision.WAIT and kind is not Decision.BUSY:
                return kind, value
        self._queue.append((args, waiter))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        return None

    async def begin(self, key: str, owner: str, est_input: int, max_output: int, worst_micros: int):
        self._on_loop()
        future = asyncio.get_running_loop().create_future()
        decision = self._now_or_queue((key, owner, est_input, max_output, worst_micros), future)
        return decision if decision is not None else await future

    async def _dispatch(self) -> None:
        try:
            await self._serve_queue()
        except BaseException as e:  # never strand waiters: hand them the failure
            for _, waiter in [*self._queue, *self._parked]:
                if not waiter.done():
                    waiter.set_exception(e)
            self._queue.clear()
            self._parked = []
            raise

    async def _serve_queue(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            args, waiter = self._queue[0]
            if waiter.done():  # the caller went away
                self._queue.popleft()
                continue
            kind, value = self.core.begin(*args)
            if kind is Decision.BUSY:
                self._parked.append(self._queue.popleft())
                continue
            if kind is Decision.WAIT:
                if self.core.limiter.blocked_by == "in_flight":
                    value = 1.0  # a slot frees when a call ends, which wakes us
                self._wake = wake = loop.create_future()
                timer = loop.call_later(min(max(value, MIN_WAIT_S), 1.0), _resolve, wake)
                try:
                    await wake
                finally:
                    timer.cancel()
                    self._wake = None
                continue
            self._queue.popleft()
            waiter.set_result((kind, value))

    def _released(self) -> None:
        requeued = bool(self._parked)
        if requeued:  # their keys may be free (or answered) now: back to the front
            self._queue.extendleft(reversed(self._parked))
            self._parked = []
            if self._dispatcher is None or self._dispatcher.done():
                self._dispatcher = asyncio.create_task(self._dispatch())
        can_go_sooner = requeued or self.core.limiter.blocked_by in ("in_flight", "input", "output")
        if can_go_sooner and self._wake is not None:
            _resolve(self._wake)

    async def finish(self, grant_id, cost_micros, input_tokens, output_tokens, location, final=True) -> None:
        self.core.finish(grant_id, cost_micros, input_tokens, output_tokens, location, final)
        self._released()

    async def fail(self, grant_id, throttled=False, final=False, maybe_billed=False) -> None:
        self.core.fail(grant_id, throttled, final, maybe_billed)
        self._released()

    async def stats(self) -> dict[str, Any]:
        return {**self.core.stats(), "waiting": len(self._queue), "parked": len(self._parked)}

    async def close(self) -> dict[str, Any]:
        return self.core.close()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class LocalGovernor(_AsyncFacade):
    """The governor in this process (one-process runs and tests)."""

    def __init__(self, core: GovernorCore):
        self.core = core
        self._setup()


class GovernorActorImpl(_AsyncFacade):
    """The governor as a Ray actor: workers exchange their settlements and requests with it, one
    round trip per tick (``RemoteGovernor``).

    A worker that stops exchanging is presumed gone (its process or its node died). A worker
    with requests waiting here exchanges every tick, and one holding calls in flight at least
    every heartbeat (``heartbeat_seconds``), so silence for ``stale_s``
    (``governor_core.silence_seconds``: half a lease, at most 30 s) means it will collect nothing
    more and finish nothing it holds. Left alone, the queue would go on granting its waiting
    requests, and each grant would hold a slot of the quota and reserve its worst case until the
    lease expired. It would then be settled at that worst case, as if billed, though it was never
    sent (seen on two nodes: 22 of 30 grants went to a dead worker's queue and used up the cap).
    So its requests leave the queue, and its grants not yet delivered are released at no cost:
    the worker never saw them, so it can have sent none. The grants it had collected, the calls
    it may have had in flight, are settled at their worst case at once (``GovernorCore.abandon``:
    they may have been billed) and their keys freed: a restarted engine asking the same
    questions again would otherwise wait for its dead self's leases, 45 minutes for a local
    engine's (seen on two nodes). A worker presumed gone that exchanges again (a long pause, not
    a death) gets its requests queued again, and they are decided as if it had never left; its
    abandoned calls' answers are not counted again (their cost is already the worst case).
    """

    def __init__(self, config_json: str, ledger_uri: str | None, cache_root: str, storage_json: str | None):
        from crome_ray.config import StorageConfig
        from crome_ray.oracle.cache import ResponseCache

        config = OracleConfig.model_validate_json(config_json)
        storage = StorageConfig.model_validate_json(storage_json) if storage_json else None
        cache = ResponseCache(cache_root, config.backend, config.model, storage)
        ledger = LedgerStore(ledger_uri, storage) if ledger_uri else None
        self.core = GovernorCore(config, ledger, cache.scan())
        self._setup()
        self._mailboxes: dict[str, list] = {}
        self._seen: dict[str, float] = {}  # worker -> its last exchange (monotonic)
        self._dormant: dict[str, list] = {}  # a worker presumed gone -> its requests, (args, waiter)
        self._holding: dict[str, set[int]] = {}  # worker -> grants delivered to it, not yet settled
        self.stale_s = silence_seconds(config)

    async def ping(self) -> bool:
        return True

    async def note_engine(self, info: dict[str, Any]) -> None:
        """A local engine started (model, start-up seconds): reported in the stats, apart from calls."""
        self.core.engines.append(info)

    async def exchange(self, worker: str, settlements: list[tuple], requests: list[tuple]) -> list[tuple]:
        """One round trip for a worker's whole tick. Settle the calls that ended; queue the new
        requests (each is sent once and waits here, in the same FIFO as everyone's); return the
        decisions made for this worker's requests since its last exchange: (request id, kind, value)."""
        now = time.monotonic()
        self._seen[worker] = now
        self._on_loop()
        holding = self._holding.setdefault(worker, set())
        for kind, *args in settlements:
            holding.discard(args[0])  # the grant's id
            if kind == "finish":
                self.core.finish(*args)
            else:
                self.core.fail(*args)
        self._sweep(now)
        if settlements:
            self._released()
        box = self._mailboxes.setdefault(worker, [])
        back = self._dormant.pop(worker, [])  # it was presumed gone: its requests queue again
        for args, waiter in [*back, *((tuple(a), _Mailbox(box, rid, tuple(a))) for rid, a in requests)]:
            decision = self._now_or_queue(args, waiter)
            if decision is not None:
                waiter.set_result(decision)
        out = [(request_id, kind, value, now - decided) for request_id, kind, value, decided, _ in box]
        holding.update(value for _, kind, value, _ in out if kind is Decision.GO)
        box.clear()
        return out

    def _sweep(self, now: float) -> None:
        """Every worker silent for ``stale_s`` with something waiting for it: presumed gone."""
        for worker, seen in self._seen.items():
            if now - seen > self.stale_s and worker not in self._dormant:
                self._presume_gone(worker)

    def _presume_gone(self, worker: str) -> None:
        box = self._mailboxes.get(worker)
        if box is None:
            return

        def its(waiter) -> bool:
            return isinstance(waiter, _Mailbox) and waiter.box is box

        mine = [(a, w) for a, w in [*self._queue, *self._parked] if its(w)]
        held = self._holding.pop(worker, set())
        if not mine and not held and not any(kind is Decision.GO for _, kind, *_ in box):
            return  # nothing waits for it and it holds nothing: an idle worker, not a lost one
        for grant_id in sorted(held):  # collected, maybe sent: settled at the worst case now
            self.core.abandon(grant_id)
        self._queue = collections.deque((a, w) for a, w in self._queue if not its(w))
        self._parked = [(a, w) for a, w in self._parked if not its(w)]
        kept = []
        for request_id, kind, value, decided, args in box:
            if kind is Decision.GO:  # never delivered, so never sent: released, asked again if it returns
                self.core.release(value)
                mine.append((args, _Mailbox(box, request_id, args)))
            else:
                kept.append((request_id, kind, value, decided, args))
        box[:] = kept
        self._dormant[worker] = mine
        self.core.counts["workers_presumed_gone"] += 1
        self._released()

    async def stats(self) -> dict[str, Any]:
        self._sweep(time.monotonic())
        return await super().stats()

    async def close(self) -> dict[str, Any]:
        self._sweep(time.monotonic())
        return await super().close()


def governor_actor(name: str, namespace: str = "crome-ray"):
    """The Ray actor class, created on demand (importing this module needs no Ray).

    On the node of the process that creates it (the job's driver), never elsewhere: the run
    already lives and dies with its driver, and a governor on a worker node that dies would
    take the run's quota and dollar cap with it. A worker node's loss then costs only the calls
    its oracle actors had in flight, whose leases expire and are settled at their worst case
    (``governor_core``); the governor and its ledger go on."""
    import ray

    from crome_ray.ray_runtime import on_this_node

    return ray.remote(num_cpus=0, max_concurrency=4096, max_restarts=0)(GovernorActorImpl).options(
        name=name, namespace=namespace, get_if_exists=True, scheduling_strategy=on_this_node()
    )


class RemoteGovernor:
    """The governor interface for a worker, over the actor, one batched round trip per tick.

    A Ray actor call costs about 0.9 ms of CPU across caller and actor (measured on this
    project's CI machine), more than the rest of an oracle call's client work; two per
    request would dominate. So a worker sends, at most every ``tick_s``, one ``exchange``
    with the calls that ended and its new requests; each request is sent once and waits
    in the governor's queue, and its decision comes back with a later exchange. Grants
    are counted by the governor when it grants them; the quota's window slack covers the
    tick between grant and send.
    """

    def __init__(
        self, handle: Any, window_slack_s: float = 1.0, tick_s: float = 0.2, heartbeat_s: float = 5.0
    ):
        """``heartbeat_s``: while it holds calls and has nothing else to send, the worker still
        exchanges this often, so the governor can tell a long call from a dead worker
        (``governor_core.heartbeat_seconds``)."""
        # a grant must be used well inside the quota's window slack, or it is given back
        self.handle, self.tick_s = handle, min(tick_s, window_slack_s / 4)
        self.heartbeat_s = max(heartbeat_s, self.tick_s)
        self._held: set[int] = set()  # grants handed to callers and not yet settled
        self._closing = False
        self._wake = asyncio.Event()
        self.max_grant_age = window_slack_s / 2
        self.stale_grants = 0
        self.worker = uuid.uuid4().hex[:12]
        self._new: list[tuple[int, tuple]] = []
        self._waiting: dict[int, asyncio.Future] = {}
        self._args: dict[int, tuple] = {}
        self._outbox: list[tuple] = []
        self._ids = itertools.count()
        self._pump: asyncio.Task | None = None
        self._last = 0.0
        self._queued = 0  # settlements handed to this worker's outbox, ever
        self._delivered = 0  # of those, how many an exchange has carried to the governor

    async def begin(self, *args):
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._args[request_id] = args
        self._new.append((request_id, args))
        self._kick()
        return await future

    async def finish(self, *args) -> None:
        self._outbox.append(("finish", *args))
        self._queued += 1
        self._held.discard(args[0])
        self._kick()

    async def fail(self, *args) -> None:
        self._outbox.append(("fail", *args))
        self._queued += 1
        self._held.discard(args[0])
        self._kick()

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every settlement made so far has reached the governor. A stage calls this
        before it returns a batch's rows, so when the job has every row, the governor has every
        call's cost and tokens (else the last tick's could miss the stats)."""
        target = self._queued
        if self._delivered >= target:
            return
        self._kick()
        deadline = time.monotonic() + timeout_s
        while self._delivered < target and time.monotonic() < deadline:
            await asyncio.sleep(self.tick_s / 8)

    async def stats(self) -> dict[str, Any]:
        return await self.handle.stats.remote()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Send what is still in the outbox (the last calls' settlements), then stop the pump."""
        self._closing = True  # no more heartbeats: the pump ends once the outbox is sent
        if self._pump is None:
            return
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), timeout_s)
        except Exception:  # best effort at teardown (a timeout too): a lost settlement expires as a lease
            self._pump.cancel()

    def _kick(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run())
        else:
            self._wake.set()  # a pump waiting out a heartbeat has something to send now

    async def _run(self) -> None:
        while self._new or self._outbox or self._waiting or (self._held and not self._closing):
            busy = bool(self._new or self._outbox or self._waiting)
            delay = self._last + (self.tick_s if busy else self.heartbeat_s) - time.monotonic()
            if delay > 0 and not busy:  # only calls in flight: a heartbeat, unless woken first
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            new, self._new = self._new, []
            outbox, self._outbox = self._outbox, []
            self._last = time.monotonic()
            try:
                decisions = await self.handle.exchange.remote(self.worker, outbox, new)
                rtt = time.monotonic() - self._last
                self._delivered += sum(1 for s in outbox if s[0] in ("finish", "fail"))
            except Exception as e:  # the governor is gone: every waiting call fails with the reason
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(e)
                self._waiting.clear()
                continue
            for request_id, kind, value, age in decisions:
                if kind is Decision.GO and age + rtt > self.max_grant_age:
                    # too late to send safely inside the provider's window: give it back, ask again
                    self.stale_grants += 1
                    self._outbox.append(("fail", value, False, False, False))
                    self._queued += 1
                    self._new.append((request_id, self._args[request_id]))
                    continue
                future = self._waiting.pop(request_id, None)
                self._args.pop(request_id, None)
                if future is None or future.done():
                    continue
                if kind is Decision.ERROR:
                    future.set_exception(RuntimeError(value))
                else:
                    if kind is Decision.GO:  # until the caller's finish or fail
                        self._held.add(value)
                    future.set_result((kind, value))
