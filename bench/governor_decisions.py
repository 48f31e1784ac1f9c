"""The oracle governor alone: decisions per second for N simulated workers.

Run as:
    .venv/bin/python bench/governor_decisions.py            # N = 10, 100, 300, 1,000: ~4 min on 2 cores
    .venv/bin/python bench/governor_decisions.py --workers 10 100 --wait-workers 10 --ray-workers 10  # quick

No oracle is called and nothing is cached: only the governor works. Each simulated worker
does what an oracle actor's ``RemoteGovernor`` does once per tick (0.2 s): it settles the
calls that ended and sends its new requests (``--per-tick`` of them). A granted call ends
``--latency-ticks`` ticks later, so at steady state ``N × per_tick × latency_ticks`` calls
are in flight, each a lease the governor holds. Measurement starts once that steady state
is reached (after ``latency_ticks`` ticks). The sides:

1. ``core``: ``GovernorCore.begin`` / ``finish`` called straight, on a fake clock, with the
   quota far above the offered rate: every answer is GO.
2. ``core-wait``: the same with the quota at half the offered rate. A worker asks again,
   each tick, for every request answered WAIT (up to ``per_tick × latency_ticks``
   outstanding), so most answers are WAIT: what a WAIT costs.
3. ``exchange``: ``GovernorActorImpl.exchange`` (the async facade the Ray actor runs),
   called in this process on one event loop, on a fake clock; every answer is GO.
4. ``exchange-wait``: the same in real time with the quota at half the offered rate:
   requests wait in the facade's FIFO (sent once) and its dispatcher grants them on timers.
5. ``ray``: a real Ray actor (``governor_actor``), N concurrent ``exchange`` calls per tick
   from this driver, ticks back to back (no 0.2 s sleep), calls lasting
   ``--ray-latency-ticks`` ticks: what the actor answers through Ray, with the driver and
   the actor sharing this machine's cores.

Sides 1-4 count the CPU time of this process (``time.process_time``, the simulation's own
loop included); side 5 counts wall time and reports the actor process's CPU beside it.
A call is one GO answer and one finish: ``calls_per_cpu_s`` is the calls one governor lets
through per second of its one core, against ``offered_calls_per_s`` (N × per_tick / tick).
``ceiling`` interpolates, from the ``exchange`` side, the rate R at which one core is
just enough when R × call latency calls are in flight.

Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import tempfile
import time
from collections import Counter

from crome_ray.config import load_config
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.governor import GovernorActorImpl, governor_actor
from crome_ray.oracle.governor_core import Decision, GovernorCore

TICK_S = 0.2  # RemoteGovernor's tick
EST_INPUT, MAX_OUTPUT, WORST_MICROS = 600, 200, 700  # one grading call, roughly
IN_TOKENS, OUT_TOKENS, COST_MICROS = 580, 60, 330
GEMINI_TIER3_RPM = 10_000


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def oracle_config(rpm: int, max_in_flight: int) -> OracleConfig:
    return load_config(
        OracleConfig,
        None,
        [
            f"quota.rpm={rpm}",
            f"quota.input_tpm={rpm * EST_INPUT * 10}",
            f"quota.max_in_flight={max_in_flight}",
            "budget.cap_usd=1000000",
        ],
    )


def offered(n: int, per_tick: int) -> float:
    return n * per_tick / TICK_S


def quota_for(n: int, per_tick: int, latency: int, wait: bool) -> tuple[int, int]:
    """(rpm, max in flight): far above the offered rate, or half of it. The in-flight cap
    never binds: it is the steady state's own in-flight count."""
    if not wait:
        return 10**9, 10**9
    return max(1, int(offered(n, per_tick) * 60 / 2)), max(1, n * per_tick * latency)


class Meter:
    """The measured window: from tick ``warm`` (the in-flight count is steady by then) for
    ``ticks`` ticks, or fewer once ``max_cpu_s`` of CPU is spent (at least one tick)."""

    def __init__(self, warm: int, ticks: int, max_cpu_s: float):
        self.warm, self.ticks, self.max_cpu_s = warm, ticks, max_cpu_s
        self.measured = 0
        self.cpu0 = self.wall0 = 0.0

    def go_on(self, t: int, counts: Counter) -> bool:
        """Called before tick ``t``; False: stop."""
        if t == self.warm:
            counts.clear()
            self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        elif t > self.warm:
            self.measured += 1
            if self.measured >= self.ticks or time.process_time() - self.cpu0 >= self.max_cpu_s:
                return False
        return True

    def elapsed(self) -> tuple[float, float]:
        return time.process_time() - self.cpu0, time.perf_counter() - self.wall0


def ticks_for(n: int, asks_per_tick: float, decisions: int) -> int:
    return max(1, math.ceil(decisions / (n * asks_per_tick)))


def result(counts: Counter, cpu: float, wall: float, ticks: int, n: int, per_tick: int, **extra) -> dict:
    go, answers, finishes = counts["go"], counts["answers"], counts["finish"]
    out = {
        "ticks": ticks,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "go": go,
        "wait": counts["wait"],
        "other": answers - go - counts["wait"],
        "finishes": finishes,
        "decisions_per_cpu_s": round((answers + finishes) / cpu, 1) if cpu > 0 else None,
        "calls_per_cpu_s": round(go / cpu, 1) if cpu > 0 and go else None,
        "us_per_call": round(cpu / go * 1e6, 2) if go else None,
        "offered_calls_per_s": offered(n, per_tick),
        "fraction_wait": round(counts["wait"] / answers, 3) if answers else None,
    }
    out.update(extra)
    return out


def requests_of(owner: str, per_tick: int, keys, request_ids) -> list[tuple[int, tuple]]:
    return [
        (next(request_ids), (next(keys), owner, EST_INPUT, MAX_OUTPUT, WORST_MICROS)) for _ in range(per_tick)
    ]


def finish_of(grant_id: int) -> tuple:
    return ("finish", grant_id, COST_MICROS, IN_TOKENS, OUT_TOKENS, "cached", True)


# --- 1, 2: the pure core ------------------------------------------------------------------------


def tally(decided: list, ending: list, counts: Counter) -> None:
    """Count one exchange's answers; a GO's call is due to finish into ``ending``."""
    counts["answers"] += len(decided)
    for _request_id, kind, value, _age in decided:
        if kind is Decision.GO:
            ending.append(finish_of(value))
            counts["go"] += 1
        else:
            counts[kind.value] += 1


def run_core(n: int, per_tick: int, latency: int, decisions: int, max_cpu_s: float, wait: bool) -> dict:
    rpm, cap = quota_for(n, per_tick, latency, wait)
    clock = FakeClock()
    core = GovernorCore(oracle_config(rpm, cap), clock=clock)
    # at the quota, about half of a worker's outstanding requests are asked again each tick
    meter = Meter(latency, ticks_for(n, per_tick * (latency / 2 if wait else 1), decisions), max_cpu_s)
    keys = (f"k{i}" for i in itertools.count())
    owners = [f"w{w}" for w in range(n)]
    ending: list[list[tuple[int, int]]] = [[] for _ in range(latency)]  # (grant id, worker) by end tick
    waiting: list[list[tuple]] = [[] for _ in range(n)]  # per worker: requests answered WAIT
    in_flight = [0] * n
    outstanding_cap = per_tick * latency
    counts: Counter = Counter()
    t = 0
    while meter.go_on(t, counts):
        slot = t % latency
        for gid, w in ending[slot]:
            core.finish(gid, COST_MICROS, IN_TOKENS, OUT_TOKENS, "cached", True)
            in_flight[w] -= 1
        counts["finish"] += len(ending[slot])
        ending[slot] = []
        for w in range(n):
            asks = waiting[w]
            room = min(per_tick, outstanding_cap - in_flight[w] - len(asks))
            asks.extend((next(keys), owners[w], EST_INPUT, MAX_OUTPUT, WORST_MICROS) for _ in range(room))
            still = []
            for args in asks:
                kind, value = core.begin(*args)
                if kind is Decision.GO:
                    ending[slot].append((value, w))
                    in_flight[w] += 1
                    counts["go"] += 1
                else:
                    still.append(args)
                    counts["wait" if kind is Decision.WAIT else kind.value] += 1
            counts["answers"] += len(asks)
            waiting[w] = still
        clock.t += TICK_S
        t += 1
    cpu, wall = meter.elapsed()
    return result(counts, cpu, wall, meter.measured, n, per_tick, rpm=rpm, in_flight_end=len(core.leases))


# --- 3, 4: the async facade's exchange (what the actor runs) --------------------------------------


def new_facade(rpm: int, cap: int, clock: FakeClock | None, tmp: str) -> GovernorActorImpl:
    cfg = oracle_config(rpm, cap)
    impl = GovernorActorImpl(cfg.model_dump_json(), None, tmp, None)
    if clock is not None:  # the same core the actor builds, on the simulation's clock
        impl.core = GovernorCore(cfg, clock=clock)
    return impl


async def run_exchange(
    n: int, per_tick: int, latency: int, decisions: int, max_cpu_s: float, tmp: str
) -> dict:
    rpm, cap = quota_for(n, per_tick, latency, wait=False)
    clock = FakeClock()
    impl = new_facade(rpm, cap, clock, tmp)
    meter = Meter(latency, ticks_for(n, per_tick, decisions), max_cpu_s)
    keys, request_ids = (f"k{i}" for i in itertools.count()), itertools.count()
    owners = [f"w{w}" for w in range(n)]
    ending: list[list[list[tuple]]] = [[[] for _ in range(n)] for _ in range(latency)]
    counts: Counter = Counter()
    t = 0
    while meter.go_on(t, counts):
        slot = t % latency
        settling, ending[slot] = ending[slot], [[] for _ in range(n)]
        for w in range(n):
            requests = requests_of(owners[w], per_tick, keys, request_ids)
            decided = await impl.exchange(owners[w], settling[w], requests)
            counts["finish"] += len(settling[w])
            tally(decided, ending[slot][w], counts)
        clock.t += TICK_S
        t += 1
    cpu, wall = meter.elapsed()
    return result(
        counts, cpu, wall, meter.measured, n, per_tick, rpm=rpm, in_flight_end=len(impl.core.leases)
    )


async def run_exchange_wait(n: int, per_tick: int, latency: int, seconds: float, tmp: str) -> dict:
    """Real time (the dispatcher's timers are real), the quota at half the offered rate.
    A request beyond the quota is sent once and waits in the FIFO: it gets no WAIT answer,
    its GO comes back with a later exchange."""
    rpm, cap = quota_for(n, per_tick, latency, wait=True)
    impl = new_facade(rpm, cap, None, tmp)
    keys, request_ids = (f"k{i}" for i in itertools.count()), itertools.count()
    owners = [f"w{w}" for w in range(n)]
    ending: list[list[list[tuple]]] = [[[] for _ in range(n)] for _ in range(latency)]
    outstanding = [0] * n  # sent and not yet settled
    outstanding_cap = 2 * per_tick * latency
    meter = Meter(2 * latency, max(1, round(seconds / TICK_S)), float("inf"))
    counts: Counter = Counter()
    behind, t = 0, 0
    start = time.perf_counter()
    while meter.go_on(t, counts):
        if t == meter.warm:
            behind = 0
        slot = t % latency
        settling, ending[slot] = ending[slot], [[] for _ in range(n)]
        for w in range(n):
            requests = requests_of(
                owners[w], min(per_tick, outstanding_cap - outstanding[w]), keys, request_ids
            )
            outstanding[w] += len(requests) - len(settling[w])
            decided = await impl.exchange(owners[w], settling[w], requests)
            counts["finish"] += len(settling[w])
            counts["sent"] += len(requests)
            tally(decided, ending[slot][w], counts)
        t += 1
        delay = start + t * TICK_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the dispatcher runs here
        else:
            behind += 1
            await asyncio.sleep(0)
    cpu, wall = meter.elapsed()
    stats = await impl.stats()
    return result(
        counts,
        cpu,
        wall,
        meter.measured,
        n,
        per_tick,
        rpm=rpm,
        sent=counts["sent"],
        queued_end=stats["waiting"],
        in_flight_end=stats["in_flight"],
        granted_per_wall_s=round(counts["go"] / wall, 1),
        quota_calls_per_s=round(rpm / (60 + 1), 1),  # the pacer spreads rpm over window + slack
        cpu_utilisation=round(cpu / wall, 3),
        ticks_behind=behind,
    )


# --- 5: through Ray -------------------------------------------------------------------------------


def process_cpu_s(pid: int | None) -> float | None:
    import psutil

    if pid is None:
        return None
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def actor_pid() -> int | None:
    """The governor actor's process: a descendant of this driver (the local Ray's raylet)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if any("GovernorActorImpl" in part for part in proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    return None


def run_ray(ns: list[int], per_tick: int, latency: int, decisions: int, tmp: str) -> dict:
    import ray

    out = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for n in ns:
            rpm, cap = quota_for(n, per_tick, latency, wait=False)
            cfg = oracle_config(rpm, cap)
            handle = governor_actor(f"bench-governor-{n}").remote(cfg.model_dump_json(), None, tmp, None)
            ray.get(handle.ping.remote())
            pid = actor_pid()
            meter = Meter(latency, ticks_for(n, per_tick, decisions), float("inf"))
            keys, request_ids = (f"k{i}" for i in itertools.count()), itertools.count()
            owners = [f"w{w}" for w in range(n)]
            ending: list[list[list[tuple]]] = [[[] for _ in range(n)] for _ in range(latency)]
            counts: Counter = Counter()
            actor0, t = None, 0
            while meter.go_on(t, counts):
                if t == meter.warm:
                    actor0 = process_cpu_s(pid)
                slot = t % latency
                settling, ending[slot] = ending[slot], [[] for _ in range(n)]
                refs = []
                for w in range(n):
                    requests = requests_of(owners[w], per_tick, keys, request_ids)
                    refs.append(handle.exchange.remote(owners[w], settling[w], requests))
                    counts["finish"] += len(settling[w])
                for w, decided in enumerate(ray.get(refs)):
                    tally(decided, ending[slot][w], counts)
                t += 1
            driver_cpu, wall = meter.elapsed()
            actor1 = process_cpu_s(pid)
            actor_cpu = actor1 - actor0 if actor0 is not None and actor1 is not None else None
            exchanges = n * meter.measured
            r = result(counts, wall, wall, meter.measured, n, per_tick, rpm=rpm)
            del r["cpu_s"]  # through Ray the rates are per wall second: two processes share the cores
            r["decisions_per_wall_s"] = r.pop("decisions_per_cpu_s")
            r["calls_per_wall_s"] = r.pop("calls_per_cpu_s")
            r["us_per_call_wall"] = r.pop("us_per_call")
            r.update(
                exchanges=exchanges,
                exchanges_per_wall_s=round(exchanges / wall, 1),
                driver_cpu_s=round(driver_cpu, 3),
                actor_cpu_s=round(actor_cpu, 3) if actor_cpu is not None else None,
                actor_us_per_exchange=round(actor_cpu / exchanges * 1e6, 1) if actor_cpu else None,
            )
            out[str(n)] = r
            ray.kill(handle)
    finally:
        ray.shutdown()
    return out


# --- the ceiling -----------------------------------------------------------------------------------


def ceiling_of(by_n: dict[str, dict], per_tick: int, latency_s: float) -> dict:
    """Where one core stops being enough. At rate R with calls lasting L seconds, R × L calls
    are in flight; the measured points give the calls/s one core lets through at that many in
    flight. Headroom = that / R; the ceiling is where the headroom falls to 1 (interpolated
    linearly in log-log between the measured points that bracket it)."""
    points = []
    for n, r in sorted(by_n.items(), key=lambda kv: int(kv[0])):
        in_flight = int(n) * per_tick * latency_s / TICK_S
        rate_needing_it = in_flight / latency_s
        points.append((in_flight, r["calls_per_cpu_s"] / rate_needing_it))
    for (x0, h0), (x1, h1) in itertools.pairwise(points):
        if h0 >= 1 > h1:
            f = math.log(h0) / (math.log(h0) - math.log(h1))
            in_flight = math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0)))
            rate = in_flight / latency_s
            return {
                "calls_per_s": round(rate),
                "rpm": round(rate * 60),
                "in_flight": round(in_flight),
                "bound": "=",
            }
    rate = points[-1][0] / latency_s if points[-1][1] >= 1 else points[0][0] / latency_s
    return {
        "calls_per_s": round(rate),
        "rpm": round(rate * 60),
        "bound": ">=" if points[-1][1] >= 1 else "<=",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[10, 100, 300, 1000], help="N: core and exchange"
    )
    ap.add_argument("--wait-workers", type=int, nargs="+", default=[10, 100, 300], help="N: the WAIT sides")
    ap.add_argument("--ray-workers", type=int, nargs="+", default=[10, 100, 1000], help="N: through Ray")
    ap.add_argument("--per-tick", type=int, default=1, help="new requests per worker per 0.2 s tick")
    ap.add_argument("--latency-ticks", type=int, default=8, help="ticks a granted call lasts (8: 1.6 s)")
    ap.add_argument("--ray-latency-ticks", type=int, default=1, help="the same, through Ray")
    ap.add_argument("--decisions", type=int, default=3000, help="GO answers to measure per side and N")
    ap.add_argument(
        "--max-side-s", type=float, default=10.0, help="CPU seconds measured at most per side and N"
    )
    ap.add_argument(
        "--wait-seconds", type=float, default=3.0, help="exchange-wait: real seconds measured per N"
    )
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray actor side")
    args = ap.parse_args()
    started = time.perf_counter()
    sides: dict[str, dict] = {"core": {}, "core-wait": {}, "exchange": {}, "exchange-wait": {}}
    with tempfile.TemporaryDirectory(prefix="governor-bench-") as tmp:
        for n in args.workers:
            sides["core"][str(n)] = run_core(
                n, args.per_tick, args.latency_ticks, args.decisions, args.max_side_s, wait=False
            )
            sides["exchange"][str(n)] = asyncio.run(
                run_exchange(n, args.per_tick, args.latency_ticks, args.decisions, args.max_side_s, tmp)
            )
        for n in args.wait_workers:
            sides["core-wait"][str(n)] = run_core(
                n, args.per_tick, args.latency_ticks, args.decisions, args.max_side_s, wait=True
            )
            sides["exchange-wait"][str(n)] = asyncio.run(
                run_exchange_wait(n, args.per_tick, args.latency_ticks, args.wait_seconds, tmp)
            )
        if not args.no_ray:
            sides["ray"] = run_ray(
                args.ray_workers, args.per_tick, args.ray_latency_ticks, args.decisions, tmp
            )

    tier3 = GEMINI_TIER3_RPM / 60
    latency_s = args.latency_ticks * TICK_S
    ceiling = ceiling_of(sides["exchange"], args.per_tick, latency_s)
    ceiling["vs_gemini_tier3"] = round(ceiling["calls_per_s"] / tier3, 1)
    ray_side = sides.get("ray", {})
    per_exchange = [r["actor_us_per_exchange"] for r in ray_side.values() if r.get("actor_us_per_exchange")]
    if per_exchange:  # each worker with calls waiting exchanges once per tick
        fewest = min(per_exchange)
        ceiling["ray_actor_us_per_exchange_min"] = fewest
        ceiling["ray_exchanges_per_actor_cpu_s"] = round(1e6 / fewest)
        ceiling["ray_workers_at_one_exchange_per_tick"] = round(1e6 / fewest * TICK_S)
    line = {
        "bench": "governor_decisions",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "workers": args.workers,
        "wait_workers": args.wait_workers,
        "ray_workers": [] if args.no_ray else args.ray_workers,
        "per_tick": args.per_tick,
        "tick_s": TICK_S,
        "latency_ticks": args.latency_ticks,
        "call_latency_s": latency_s,
        "ray_latency_ticks": args.ray_latency_ticks,
        "decisions": args.decisions,
        "max_side_s": args.max_side_s,
        "wait_seconds": args.wait_seconds,
        "request": {"est_input": EST_INPUT, "max_output": MAX_OUTPUT, "worst_micros": WORST_MICROS},
        "gemini_tier3_calls_per_s": round(tier3, 1),
        "results": sides,
        "ceiling": ceiling,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line))

    header = ("side", "N", "in flight", "offered/s", "GO", "WAIT", "µs/call", "calls/s", "headroom")
    widths = (14, 6, 10, 10, 8, 8, 10, 10, 9)
    print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for side, by_n in sides.items():
        latency = args.ray_latency_ticks if side == "ray" else args.latency_ticks
        for n, r in by_n.items():
            us = r.get("us_per_call", r.get("us_per_call_wall"))
            rate = r.get("calls_per_cpu_s", r.get("calls_per_wall_s"))
            cells = (
                side,
                n,
                int(n) * args.per_tick * latency,
                f"{r['offered_calls_per_s']:.0f}",
                r["go"],
                r["wait"],
                "-" if us is None else us,
                "-" if rate is None else rate,
                "-" if rate is None else f"{rate / r['offered_calls_per_s']:.2f}",
            )
            print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(
        "\n(core and exchange sides: per CPU second of this process; ray: per wall second through the actor;"
    )
    print(" headroom: calls/s over the rate the N workers offer)")
    print(
        f"One governor core is the ceiling at {ceiling['bound']} {ceiling['calls_per_s']:,} calls/s "
        f"({ceiling['rpm']:,} RPM) with {latency_s:.1f} s calls: {ceiling['vs_gemini_tier3']}x Gemini Tier 3 "
        f"({GEMINI_TIER3_RPM:,} RPM = {tier3:.0f} calls/s)"
    )
    if per_exchange:
        print(
            f"Through Ray: {ceiling['ray_actor_us_per_exchange_min']} µs of actor CPU per exchange (fewest "
            f"measured): one actor serves about {ceiling['ray_workers_at_one_exchange_per_tick']:,} "
            f"workers exchanging every {TICK_S} s"
        )


if __name__ == "__main__":
    main()
