"""The governor's queue: who waits, what wakes it, and what a worker hears when it breaks.

In one process, no server: the decisions are the governor's alone.
"""

import asyncio

import pytest

from crome_ray.config import load_config
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.governor import GovernorActorImpl, LocalGovernor, RemoteGovernor
from crome_ray.oracle.governor_core import Decision, GovernorCore, heartbeat_seconds, silence_seconds

GO, WAIT, BUSY, ERROR = Decision.GO, Decision.WAIT, Decision.BUSY, Decision.ERROR


def config(**over) -> OracleConfig:
    base = {"quota.window_slack_s": 0.0, "quota.input_tpm": 10_000_000, "budget.cap_usd": 100}
    return load_config(OracleConfig, None, [f"{k}={v}" for k, v in {**base, **over}.items()])


def ask(gov, key: str):
    return gov.begin(key, f"owner-{key}", 10, 10, 1_000)  # worst case: 1,000 micro-dollars


def counting_begins(core: GovernorCore) -> list[int]:
    calls = [0]
    real = core.begin

    def begin(*args):
        calls[0] += 1
        return real(*args)

    core.begin = begin
    return calls


def test_calls_ending_do_not_wake_a_governor_that_waits_for_the_request_window():
    async def scenario():
        core = GovernorCore(config(**{"quota.rpm": 2, "quota.max_in_flight": 100}))
        gov = LocalGovernor(core)
        grants = [await ask(gov, "a"), await ask(gov, "b")]
        assert [kind for kind, _ in grants] == [GO, GO]
        begins = counting_begins(core)
        third = asyncio.create_task(ask(gov, "c"))
        await asyncio.sleep(0.05)
        assert core.limiter.blocked_by in ("pace", "requests")
        checked = begins[0]
        for _, grant in grants:
            await gov.finish(grant, 0, 10, 10, None)
        await asyncio.sleep(0.1)
        assert not third.done()  # the window is still full: nothing it could do
        assert begins[0] == checked  # and it did not look
        third.cancel()

    asyncio.run(scenario())


def test_a_call_ending_lets_a_caller_held_by_the_in_flight_cap_go_at_once():
    async def scenario():
        core = GovernorCore(config(**{"quota.rpm": 100_000, "quota.max_in_flight": 1}))
        gov = LocalGovernor(core)
        kind, grant = await ask(gov, "a")
        assert kind == GO
        second = asyncio.create_task(ask(gov, "b"))
        await asyncio.sleep(0.05)
        assert not second.done() and core.limiter.blocked_by == "in_flight"
        await gov.finish(grant, 0, 10, 10, None)
        kind, _ = await asyncio.wait_for(second, timeout=0.3)  # not the 1 s fallback timer
        assert kind == GO

    asyncio.run(scenario())


def test_a_worker_waiting_on_a_broken_governor_hears_why_instead_of_hanging(tmp_path):
    async def scenario():
        cfg = config(**{"quota.rpm": 2, "quota.max_in_flight": 100})
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        args = ("k1", "w-1", 10, 10, 1_000), ("k2", "w-2", 10, 10, 1_000), ("k3", "w-3", 10, 10, 1_000)
        first = await actor.exchange("w", [], [(i, a) for i, a in enumerate(args)])
        assert [kind for _, kind, _, _ in first] == [GO, GO]  # the third waits in the queue

        def broken(*_):
            raise OSError("ledger unreachable")

        actor.core.begin = broken
        await actor.exchange("w", [("finish", first[0][2], 0, 10, 10, None, True)], [])
        await asyncio.sleep(1.2)  # the dispatcher's next look at the queue
        later = await actor.exchange("w", [], [])
        assert [(i, kind) for i, kind, _, _ in later] == [(2, ERROR)]
        assert "ledger unreachable" in later[0][2]

    asyncio.run(scenario())


def test_a_worker_that_stops_exchanging_loses_its_queue_and_its_undelivered_grants_cost_nothing(tmp_path):
    """A worker's node dies with requests queued here. Grants made for it after its last exchange
    never reached it: they are released at no cost once it has been silent for half a lease,
    instead of holding the in-flight slots and being settled at their worst case when their
    leases expire. If it exchanges again, its requests are decided as if it had never left."""

    async def scenario():
        cfg = config(**{"quota.max_in_flight": 2, "retry.timeout_s": 1})  # a lease lives 3.5 s
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        assert actor.stale_s == pytest.approx(1.75)
        mine = [(i, (f"k{i}", "dead", 10, 10, 1_000)) for i in range(4)]
        first = await actor.exchange("dead", [], mine)
        assert [(i, kind) for i, kind, _, _ in first] == [(0, GO), (1, GO)]  # two slots
        ended = [("finish", grant, 10, 10, 10, None, True) for _, _, grant, _ in first]
        assert await actor.exchange("dead", ended, []) == []  # the worker dies after this exchange
        died = asyncio.get_running_loop().time()
        for _ in range(24):  # k2 and k3 granted (the dispatcher wakes within a second)
            await asyncio.sleep(0.05)
            if actor.core.stats()["in_flight"] == 2:
                break
        assert actor.core.stats()["in_flight"] == 2  # the two grants nobody will collect
        assert await actor.exchange("alive", [], [(0, ("a0", "alive", 10, 10, 1_000))]) == []
        await asyncio.sleep(died + 1.8 - asyncio.get_running_loop().time())  # silent past half a lease
        got = await actor.exchange("alive", [], [])
        for _ in range(28):
            if got:
                break
            await asyncio.sleep(0.05)
            got = await actor.exchange("alive", [], [])
        assert [(i, kind) for i, kind, _, _ in got] == [(0, GO)]
        assert asyncio.get_running_loop().time() - died < 3.5  # before the phantom grants' leases end
        stats = await actor.stats()
        assert stats["released_grants"] == 2 and stats["expired_leases"] == 0
        assert stats["workers_presumed_gone"] == 1
        assert stats["spent_micros"] == 20 and stats["reserved_micros"] == 1_000  # k0 + k1; a0's
        # the worker was only paused: its two requests are queued again and decided (each call
        # settled as it comes, as a worker does)
        await actor.exchange("alive", [("finish", got[0][2], 10, 10, 10, None, True)], [])
        back, settle = [], []
        for _ in range(60):
            new = await actor.exchange("dead", settle, [])
            settle = [("finish", grant, 10, 10, 10, None, True) for _, _, grant, _ in new]
            back += new
            if len(back) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted((i, kind) for i, kind, *_ in back) == [(2, GO), (3, GO)]

    asyncio.run(scenario())


def test_a_silent_worker_holding_calls_has_them_settled_at_the_worst_case_and_their_questions_go_on(tmp_path):
    """A worker's node dies while it holds calls it had collected (a local engine generating). A
    second worker asking the same questions (the engine restarted elsewhere, its batch sent
    again) is told they are busy, and would wait for the first worker's leases to run out: 45
    minutes for a local engine's. Silent for ``stale_s`` while it holds calls, the first worker is
    presumed gone: its calls are settled at their worst case at once (they may have been billed)
    and their keys go to the second worker. If the first was only paused, its late answer is not
    counted again."""

    async def scenario():
        cfg = config(**{"quota.max_in_flight": 4, "retry.timeout_s": 1})  # a lease lives 3.5 s
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        first = await actor.exchange("dead", [], [(0, ("k0", "dead-0", 10, 10, 1_000))])
        assert [(i, kind) for i, kind, _, _ in first] == [(0, GO)]  # collected: the call is sent
        died = asyncio.get_running_loop().time()
        twin = ("k0", "next-0", 10, 10, 1_000)  # the same question from another worker
        got = await actor.exchange("next", [], [(0, twin)])
        while not got and asyncio.get_running_loop().time() - died < 3.0:
            await asyncio.sleep(0.05)
            got = await actor.exchange("next", [], [])
        assert [(i, kind) for i, kind, _, _ in got] == [(0, GO)]
        waited = asyncio.get_running_loop().time() - died
        assert actor.stale_s <= waited < 3.0  # after the silence, before the dead call's lease ends
        stats = await actor.stats()
        assert stats["workers_presumed_gone"] == 1 and stats["abandoned_leases"] == 1
        assert stats["expired_leases"] == 0 and stats["in_flight"] == 1  # the twin's call only
        assert stats["spent_micros"] == 1_000  # the dead worker's call, at its worst case
        # the first worker was only paused: its late answer changes nothing
        await actor.exchange("dead", [("finish", first[0][2], 10, 10, 10, None, True)], [])
        await actor.exchange("next", [("finish", got[0][2], 10, 10, 10, None, True)], [])
        stats = await actor.stats()
        assert stats["spent_micros"] == 1_010 and stats["in_flight"] == 0

    asyncio.run(scenario())


def test_the_silence_that_means_gone_is_half_a_lease_and_at_most_30_seconds_six_heartbeats_long():
    assert silence_seconds(config(**{"retry.timeout_s": 1})) == pytest.approx(1.75)
    local = OracleConfig(backend="vllm")  # 30-minute attempts: a lease of 45 minutes
    assert silence_seconds(local) == 30.0 and heartbeat_seconds(local) == 5.0


class InProcessHandle:
    """The governor actor's handle as a worker uses it (``handle.exchange.remote(...)`` awaited),
    calling the actor's class in this process."""

    def __init__(self, actor: GovernorActorImpl):
        self.exchange = type("Method", (), {"remote": staticmethod(actor.exchange)})()


@pytest.mark.parametrize("heartbeat", [True, False])
def test_a_worker_holding_a_call_longer_than_the_silence_is_not_taken_for_gone_while_it_beats(
    tmp_path, heartbeat
):
    """A local engine's call may last minutes, and the worker has nothing to send meanwhile. It
    exchanges every heartbeat anyway, so the governor keeps its call; without heartbeats (the
    second case) the same worker is presumed gone and its call settled at the worst case."""

    async def scenario():
        cfg = config(**{"retry.timeout_s": 1})  # gone after 1.75 s of silence
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        beat = heartbeat_seconds(cfg) if heartbeat else 60.0
        worker = RemoteGovernor(InProcessHandle(actor), window_slack_s=1.0, heartbeat_s=beat)
        kind, grant = await worker.begin("k0", "w-0", 10, 10, 1_000)
        assert kind is GO
        other = RemoteGovernor(InProcessHandle(actor), window_slack_s=1.0)
        for _ in range(3):  # another worker's exchanges, each a sweep for the silent
            await asyncio.sleep(1.0)
            assert (await other.begin(f"o{_}", f"x-{_}", 10, 10, 1_000))[0] is GO
        stats = await actor.stats()
        await worker.finish(grant, 10, 10, 10, None, True)
        await worker.aclose()
        final = await actor.stats()
        return stats, final

    stats, final = asyncio.run(scenario())
    if heartbeat:
        assert stats["workers_presumed_gone"] == 0 and stats["abandoned_leases"] == 0
        assert final["spent_micros"] == 10  # its real cost (the other worker's calls are not settled)
    else:
        assert stats["workers_presumed_gone"] == 1 and stats["abandoned_leases"] == 1
        assert final["spent_micros"] == 1_000  # settled at its worst case; its late answer ignored


def test_a_worker_waiting_out_a_heartbeat_sends_a_new_request_at_once_and_its_pump_ends_with_its_calls(
    tmp_path,
):
    """Between heartbeats the worker's pump sleeps; a new request wakes it (not the next beat, a
    minute away here). Once every call it held is settled, the pump ends; closing a worker that
    still holds a call does not wait for a heartbeat either."""

    async def scenario():
        cfg = config(**{"retry.timeout_s": 60})
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        worker = RemoteGovernor(InProcessHandle(actor), window_slack_s=1.0, heartbeat_s=60.0)
        first = await worker.begin("k0", "w-0", 10, 10, 1_000)
        await asyncio.sleep(0.5)  # the pump is now waiting out its heartbeat
        started = asyncio.get_running_loop().time()
        second = await worker.begin("k1", "w-1", 10, 10, 1_000)
        assert asyncio.get_running_loop().time() - started < 0.5
        assert first[0] is GO and second[0] is GO
        for _, grant in (first, second):
            await worker.finish(grant, 10, 10, 10, None, True)
        await worker.flush()
        await asyncio.sleep(0.3)
        assert worker._pump.done()  # nothing held: no more heartbeats
        assert (await actor.stats())["spent_micros"] == 20
        third = await worker.begin("k2", "w-2", 10, 10, 1_000)
        assert third[0] is GO
        started = asyncio.get_running_loop().time()
        await worker.aclose()  # a call still held: closing does not wait for it
        assert asyncio.get_running_loop().time() - started < 1.0 and worker._pump.done()

    asyncio.run(scenario())


@pytest.mark.parametrize("held_by", ["in_flight", "window"])
def test_every_queued_caller_is_served_in_order(held_by):
    async def scenario():
        if held_by == "in_flight":
            core = GovernorCore(config(**{"quota.rpm": 100_000, "quota.max_in_flight": 2}))
        else:
            quota = {"quota.rpm": 600, "quota.window_s": 1.0, "quota.max_in_flight": 100}
            core = GovernorCore(config(**quota))
        gov = LocalGovernor(core)
        order = []

        async def one(key):
            kind, value = await ask(gov, key)
            while kind == WAIT:
                kind, value = await ask(gov, key)
            order.append(key)
            await asyncio.sleep(0.01)
            await gov.finish(value, 0, 10, 10, None)

        keys = [f"k{i:02d}" for i in range(30)]
        await asyncio.wait_for(asyncio.gather(*(one(k) for k in keys)), timeout=10)
        assert order == keys

    asyncio.run(scenario())


def test_decisions_cross_ray_as_the_same_enum_members(tmp_path):
    """What ``exchange`` returns is pickled by Ray (cloudpickle); a worker compares with ``is``."""
    from ray import cloudpickle

    async def scenario():
        cfg = config(**{"quota.rpm": 100_000, "quota.max_in_flight": 1})
        actor = GovernorActorImpl(cfg.model_dump_json(), None, str(tmp_path / "cache"), None)
        return await actor.exchange(
            "w", [], [(0, ("k1", "o1", 10, 10, 1_000)), (1, ("k2", "o2", 10, 10, 1_000))]
        )

    decisions = asyncio.run(scenario())
    wire = cloudpickle.dumps(decisions)
    received = cloudpickle.loads(wire)
    assert [(i, kind) for i, kind, _, _ in received] == [(0, GO)] and received[0][1] is GO
    assert len(wire) < 200  # a decision stays a few bytes on the wire
