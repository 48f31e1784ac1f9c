"""Pure oracle arithmetic: prices, the sliding-window limiter, the budget and the governor's
decisions, on a fake clock; answer checking."""

import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crome_ray.config import ConfigError, load_config
from crome_ray.oracle.answers import judge_answer, parse_json_answer
from crome_ray.oracle.budget import Budget
from crome_ray.oracle.config import ModelPrice, OracleConfig, QuotaConfig
from crome_ray.oracle.governor_core import Decision, GovernorCore, allocated_micros
from crome_ray.oracle.limits import Grant, RateLimiter, SlidingWindow
from crome_ray.oracle.pricing import call_cost_micros, usd_to_micros, worst_case_micros
from crome_ray.oracle.protocol import Answer, ErrorKind, GenerationParams, OracleError, OracleRequest, Usage

FLASH = ModelPrice(input_per_m=0.30, output_per_m=2.50, cached_input_per_m=0.075)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_cost_bills_thinking_as_output_and_cached_input_at_the_cached_rate():
    u = Usage(input_tokens=1000, output_tokens=200, thinking_tokens=300, cached_tokens=400)
    # 600 uncached * 0.30 + 400 cached * 0.075 + (200 + 300) * 2.50 micro-dollars (USD per M tokens)
    assert call_cost_micros(u, FLASH) == 180 + 30 + 1250
    assert call_cost_micros(u, FLASH, batch=True) == 730  # half
    assert worst_case_micros(1000, 500, FLASH) == 300 + 1250
    # a fraction of a micro-dollar is rounded up: we never count less than the provider bills
    assert call_cost_micros(Usage(input_tokens=1), FLASH) == 1  # 0.3 micro-dollars
    assert call_cost_micros(Usage(input_tokens=10), FLASH) == 3


def test_the_worst_case_covers_a_cached_rate_dearer_than_the_uncached_one():
    odd = ModelPrice(input_per_m=0.10, output_per_m=1.0, cached_input_per_m=0.50)
    all_cached = Usage(input_tokens=1000, cached_tokens=1000, output_tokens=10)
    assert call_cost_micros(all_cached, odd) == 510 <= worst_case_micros(1000, 10, odd)


def test_request_key_changes_with_what_changes_the_answer_only():
    a = OracleRequest("p", system="s", json_schema={"type": "object"})
    assert a.key("gemini", "m") == OracleRequest(
        "p", system="s", json_schema={"type": "object"}, tag="x"
    ).key("gemini", "m")
    assert a.key("gemini", "m") != a.key("gemini", "m2")
    assert a.key("gemini", "m") != OracleRequest("p", system="s2", json_schema={"type": "object"}).key(
        "gemini", "m"
    )
    assert a.key("gemini", "m") != OracleRequest(
        "p", system="s", json_schema={"type": "object"}, params=GenerationParams(temperature=0.5)
    ).key("gemini", "m")


def test_sliding_window_waits_until_the_oldest_grants_leave():
    w = SlidingWindow(limit=3, window=60)
    for t in (0, 10, 20):
        assert w.wait(1, t) == 0
        w.add(1, t)
    assert w.wait(1, 30) == pytest.approx(30)  # the grant at t=0 leaves at t=60
    assert w.wait(2, 30) == pytest.approx(40)  # two must leave: t=0 and t=10
    assert w.wait(1, 60) == 0
    assert w.wait(4, 61) == float("inf")


def test_settling_returns_unused_output_tokens_to_the_window():
    w = SlidingWindow(limit=1000, window=60)
    e = w.add(800, 0)
    assert w.wait(500, 1) > 0
    w.adjust(e, 120, 1)  # the call used 120 of the 800 reserved
    assert w.total == 120 and w.wait(500, 1) == 0


def limiter(clock, **kw):
    q = QuotaConfig(**{"rpm": 60, "input_tpm": 10_000, "max_in_flight": 100, "window_slack_s": 0.0, **kw})
    return RateLimiter(q, clock)


def test_limiter_never_grants_more_than_rpm_in_any_window():
    clock = Clock()
    lim = limiter(clock, rpm=60)
    grants = []
    for _ in range(200_000):
        g = lim.acquire(10, 10)
        if isinstance(g, Grant):
            grants.append(clock.t)
            lim.settle(g, 10, 10)
        else:
            clock.t += min(g, 0.25)
        if clock.t > 1000 + 300:
            break
    for i, t in enumerate(grants):  # any 60 s window holds at most 60 grants
        j = i
        while j < len(grants) and grants[j] < t + 60:
            j += 1
        assert j - i <= 60
    assert len(grants) >= 0.97 * 60 * 5  # and the pace keeps up with the quota


def test_limiter_respects_input_tokens_per_minute():
    clock = Clock()
    lim = limiter(clock, rpm=1000, input_tpm=1000)
    assert isinstance(lim.acquire(600, 0), Grant)
    clock.t += 1
    w = lim.acquire(600, 0)
    assert isinstance(w, float) and w == pytest.approx(59, abs=1)


def test_limiter_caps_calls_in_flight():
    clock = Clock()
    lim = limiter(clock, rpm=10_000, max_in_flight=2)
    a, b = lim.acquire(1, 1), lim.acquire(1, 1)
    assert isinstance(a, Grant) and isinstance(b, Grant)
    clock.t += 1.0  # well past the pacing interval: only the in-flight cap can refuse now
    assert isinstance(lim.acquire(1, 1), float)
    lim.settle(a)
    assert isinstance(lim.acquire(1, 1), Grant)


def test_the_limiter_says_what_held_a_call_back():
    clock = Clock()
    lim = limiter(clock, rpm=2, max_in_flight=1)
    first = lim.acquire(1, 1)
    assert isinstance(first, Grant) and lim.blocked_by is None
    lim.acquire(1, 1)
    assert lim.blocked_by == "in_flight"
    lim.settle(first)
    clock.t += 1.0
    second = lim.acquire(1, 1)
    assert isinstance(second, Grant)
    lim.settle(second)
    assert isinstance(lim.acquire(1, 1), float) and lim.blocked_by in ("pace", "requests")
    big = limiter(clock, input_tpm=100)
    big.acquire(90, 1)
    clock.t += 5.0
    assert isinstance(big.acquire(20, 1), float) and big.blocked_by == "input"


def test_a_429_slows_the_rate_and_it_recovers_over_recovery_s():
    clock = Clock()
    lim = limiter(clock, rpm=600, backoff=0.5, recovery_s=10)
    lim.throttled()
    assert lim.max_fitting()[0] == pytest.approx(300)
    clock.t += 5
    lim.wait(1, 1)
    assert lim.max_fitting()[0] == pytest.approx(600 * 1.0)  # 0.5 + 5/10
    lim.throttled()
    lim.throttled()
    assert lim.scale == pytest.approx(0.25)


# --- the dollar cap: whole micro-dollars from the config to the ledger ----------------------


def test_budget_refuses_a_reservation_that_could_cross_the_cap():
    saved = []
    b = Budget(cap=1_000_000, chunk=250_000, persist=lambda alloc, spent: saved.append(alloc))
    r1 = b.reserve(600_000)
    assert r1 and saved == [850_000]  # allowance persisted before the call: 0.6 + chunk
    assert b.reserve(500_000) is None and b.denied == 1
    b.settle(r1, 200_000)  # cheaper than its worst case
    r2 = b.reserve(500_000)
    assert r2 and b.committed == 700_000
    b.settle(r2, 500_000)
    b.close()
    assert saved[-1] == 700_000 and b.spent == 700_000


def test_a_resumed_budget_counts_the_crashed_allocation_as_spent():
    saved = []
    b = Budget(cap=1_000_000, chunk=100_000, persist=lambda alloc, spent: saved.append(alloc))
    b.reserve(300_000)  # in flight when the process dies: never settled, never closed
    resumed = Budget(cap=1_000_000, chunk=100_000, spent_before=saved[-1])
    assert resumed.remaining == 600_000
    assert resumed.reserve(650_000) is None


def test_the_budget_takes_whole_micro_dollars_only():
    b = Budget(cap=1_000_000, chunk=10_000)
    with pytest.raises(TypeError, match="micro-dollars"):
        b.reserve(0.1)  # a float in dollars would slip past the cap's arithmetic
    with pytest.raises(TypeError, match="micro-dollars"):
        Budget(cap=5.0, chunk=1)
    with pytest.raises(ValueError, match="negative"):
        b.reserve(-1)


@pytest.mark.parametrize(
    "override, micros",
    [("5.0", 5_000_000), ('"5.00"', 5_000_000), ("0.1", 100_000), ("2.675", 2_675_000), ("0.0000009", 0)],
)
def test_the_cap_is_read_as_the_decimal_written_and_counted_in_micro_dollars(override, micros):
    cfg = load_config(OracleConfig, None, [f"budget.cap_usd={override}"])
    assert isinstance(cfg.budget.cap_usd, Decimal)
    assert usd_to_micros(cfg.budget.cap_usd, round_up=False) == micros  # a cap rounds down
    assert OracleConfig.model_validate_json(cfg.model_dump_json()) == cfg  # as it travels to the actor
    with pytest.raises(ConfigError, match=r"budget\.cap_usd"):
        load_config(OracleConfig, None, ["budget.cap_usd=-1"])


def test_the_cap_is_exact_where_floats_are_not():
    """0.1 + 0.1 + 0.1 > 0.3 in floats: a float budget refuses the third $0.10 call under a $0.30 cap."""
    core = GovernorCore(load_config(OracleConfig, None, ["budget.cap_usd=0.3"]), clock=Clock())
    decisions = [core.begin(f"k{i}", f"o{i}", 10, 10, 100_000)[0] for i in range(4)]
    assert decisions == [Decision.GO, Decision.GO, Decision.GO, Decision.BUDGET]
    assert core.budget.committed == core.budget.cap == 300_000


class MemoryStore:
    """The ledger's store as a dict (``oracle.cache.LedgerStore`` on disk or S3 in the job)."""

    uri = "memory://run.ledger.json"

    def __init__(self, doc=None):
        self.doc = doc

    def load(self):
        return self.doc

    def save(self, doc):
        self.doc = dict(doc)


def test_the_ledger_holds_integer_micro_dollars_and_old_float_ledgers_are_read_rounded_up():
    store = MemoryStore()
    core = GovernorCore(load_config(OracleConfig, None, ["budget.cap_usd=1"]), store, clock=Clock())
    _, grant = core.begin("k", "o", 10, 10, 4_321)
    core.finish(grant, 1_234, 10, 10, "where")
    core.close()
    assert store.doc["spent_micros"] == store.doc["allocated_micros"] == 1_234
    assert store.doc["cap_micros"] == 1_000_000 and all(
        type(store.doc[k]) is int for k in ("spent_micros", "allocated_micros", "cap_micros")
    )
    assert GovernorCore(core.config, store).resumed_from == 1_234
    old = MemoryStore({"allocated": 0.1234561, "spent": 0.1, "cap_usd": 1.0})
    assert GovernorCore(core.config, old).resumed_from == 123_457  # never less than it said
    assert allocated_micros({"allocated": 0.25}) == 250_000


@pytest.mark.parametrize(
    "doc", [{"allocated_micros": 1.5}, {"allocated_micros": -3}, {"allocated": "lots"}, {"jobs": []}, [], {}]
)
def test_a_ledger_that_is_not_one_is_refused_by_name(doc):
    with pytest.raises(ValueError, match=r"memory://run\.ledger\.json is not a crome-ray spend ledger"):
        GovernorCore(load_config(OracleConfig, None), MemoryStore(doc))


# --- the governor's decisions -----------------------------------------------------------------


def test_the_governor_core_imports_neither_asyncio_nor_ray():
    code = (
        "import sys, crome_ray.oracle.governor_core; "
        "print(sorted(m for m in ('asyncio', 'ray', 'fsspec', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_decision_is_an_enum_member_not_a_string():
    core = GovernorCore(load_config(OracleConfig, None), clock=Clock())
    kind, _ = core.begin("k", "o", 10, 10, 1)
    assert kind is Decision.GO and kind != "go"  # a caller comparing strings would never match


QUOTA_NEVER_BINDS = [
    "quota.rpm=1000000000",
    "quota.input_tpm=1000000000000",
    "quota.max_in_flight=1000000",
    "quota.window_slack_s=0",
]
OUTCOMES = ["answer", "invalid", "error", "throttled", "maybe_billed"]


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(0, 3_000_000),
    chunk=st.integers(1, 500_000),
    input_per_m=st.integers(0, 500),  # cents per million tokens
    output_per_m=st.integers(0, 2_000),
    calls=st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 8_000)), min_size=1, max_size=60),
    data=st.data(),
)
def test_spend_never_exceeds_the_cap_and_is_exactly_what_was_billed(
    cap, chunk, input_per_m, output_per_m, calls, data
):
    """Calls begin and end in any order (hypothesis picks which in-flight call ends next); each
    ends with a cost drawn on its own (any token counts within its limits), unbilled, or billed
    at its worst case (a timeout, which the provider may still bill); leases of a dead worker
    expire; the process may crash and resume from its ledger. Through ``GovernorCore``."""
    price = ModelPrice(input_per_m=input_per_m / 100, output_per_m=output_per_m / 100)
    cfg = load_config(
        OracleConfig,
        None,
        [
            f'budget.cap_usd="{Decimal(cap) / 10**6}"',
            f'budget.allocation_usd="{Decimal(chunk) / 10**6}"',
            *QUOTA_NEVER_BINDS,
        ],
    )
    clock, store = Clock(), MemoryStore()
    core = GovernorCore(cfg, store, clock=clock)
    counted = 0  # what this process told the core each call cost, in micro-dollars
    bill_bound = 0  # the most the provider can have billed, over every process
    in_flight: list[tuple[int, int, int, int]] = []  # (grant, worst, input tokens, max output)
    pending = list(enumerate(calls))
    crashed = False

    def begin(i, tokens_in, max_out):
        worst = worst_case_micros(tokens_in, max_out, price)
        committed = core.budget.committed
        kind, value = core.begin(f"k{i}", f"o{i}", tokens_in, max_out, worst)
        while kind is Decision.WAIT:  # the pacer, after a 429 slowed it
            clock.t += value
            kind, value = core.begin(f"k{i}", f"o{i}", tokens_in, max_out, worst)
        if kind is Decision.BUDGET:
            assert committed + worst > cap  # refused only when it could have crossed the cap
        else:
            assert kind is Decision.GO and core.budget.committed == committed + worst
            in_flight.append((value, worst, tokens_in, max_out))

    while pending or in_flight:
        ops = (["begin", "expire"] if pending else []) + (["end"] if in_flight else [])
        ops += ["crash"] if not crashed else []
        op = data.draw(st.sampled_from(ops))
        if op == "begin":
            i, (tokens_in, max_out) = pending.pop(0)
            begin(i, tokens_in, max_out)
        elif op == "end":
            grant, worst, tokens_in, max_out = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            outcome = data.draw(st.sampled_from(OUTCOMES))
            if outcome in ("answer", "invalid"):
                used_in = data.draw(st.integers(0, tokens_in))
                cached = data.draw(st.integers(0, used_in))
                out = data.draw(st.integers(0, max_out))
                thinking = data.draw(st.integers(0, max_out - out))
                usage = Usage(used_in, out, thinking, cached)
                cost = call_cost_micros(usage, price)
                assert cost <= worst  # the provider cannot bill past max tokens
                core.finish(grant, cost, used_in, out + thinking, "loc" if outcome == "answer" else None)
            elif outcome == "maybe_billed":
                cost = worst
                core.fail(grant, final=data.draw(st.booleans()), maybe_billed=True)
            else:
                cost = 0
                core.fail(grant, throttled=outcome == "throttled", final=data.draw(st.booleans()))
            counted += cost
            bill_bound += cost
        elif op == "expire":  # every worker dies; their leases run out, then a new call comes
            clock.t += core.lease_s
            for _grant, worst, _, _ in in_flight:
                counted += worst  # settled at the worst case: they may have been billed
                bill_bound += worst
            stale = list(in_flight)
            in_flight.clear()
            i, (tokens_in, max_out) = pending.pop(0)
            begin(i, tokens_in, max_out)
            if stale:  # an answer arriving after its lease expired changes nothing
                spent = core.budget.spent
                core.finish(stale[0][0], 1, 1, 1, "late")
                assert core.budget.spent == spent
        else:  # the process dies; the provider may bill its calls in flight; a new one resumes
            crashed = True
            bill_bound += sum(worst for _, worst, _, _ in in_flight)
            in_flight.clear()
            core = GovernorCore(cfg, store, clock=clock)
            assert core.resumed_from >= bill_bound  # the ledger covered all that could be billed
            counted = core.resumed_from
        assert bill_bound + sum(w for _, w, _, _ in in_flight) <= core.budget.committed <= cap
        assert core.budget.spent == counted  # exact, in whole micro-dollars
    core.close()
    assert bill_bound <= core.budget.spent == counted == store.doc["spent_micros"] <= cap
    assert core.budget.overruns == 0 and core.budget.reserved == 0


def test_leases_expire_in_grant_order_and_a_renewed_lease_lives_its_new_length():
    """A dead worker's lease runs out ``lease_s`` after its grant; the same owner asking again
    renews it. Expiry looks only at the oldest leases, so it must keep them in expiry order:
    a renewed key moves behind the later grants (else the later ones would never expire)."""
    clock = Clock()
    core = GovernorCore(load_config(OracleConfig, None, QUOTA_NEVER_BINDS), clock=clock)
    t0 = clock.t

    def ask(key, owner):
        return core.begin(key, owner, 10, 10, 1)[0]

    assert ask("a", "x") is Decision.GO  # t0
    a_grant = next(iter(core.leases))
    clock.t = t0 + 5
    assert ask("b", "x") is Decision.GO  # t0 + 5
    clock.t = t0 + 10
    core.fail(a_grant)  # x's first attempt at "a" failed; x still owns the key
    assert ask("a", "x") is Decision.GO  # renewed: lives until t0 + 10 + lease_s
    assert ask("a", "y") is Decision.BUSY and ask("b", "y") is Decision.BUSY

    clock.t = t0 + 5 + core.lease_s + 1  # b's lease is over; a's renewed one is not
    assert ask("b", "y") is Decision.GO
    assert ask("a", "y") is Decision.BUSY
    assert core.counts["expired_leases"] == 1  # b's, settled at its worst case

    clock.t = t0 + 10 + core.lease_s + 1
    assert ask("a", "y") is Decision.GO
    assert core.counts["expired_leases"] == 2
    assert [lease.key for lease in core.leases.values()] == ["b", "a"]  # y's two, oldest first


def test_expiring_leases_costs_the_same_with_many_calls_in_flight():
    """Each ``begin`` expires leases; with them kept in expiry order that looks at the oldest
    only. Counted, not timed: the leases read per ``begin`` must not grow with those in flight."""
    clock = Clock()
    core = GovernorCore(load_config(OracleConfig, None, QUOTA_NEVER_BINDS), clock=clock)
    for i in range(5_000):
        assert core.begin(f"k{i}", "o", 10, 10, 1)[0] is Decision.GO
    reads = 0

    class Counting(type(core.leases)):
        def items(self):  # counts every entry looked at
            nonlocal reads
            for entry in super().items():
                reads += 1
                yield entry

    core.leases, core.owner_of = Counting(core.leases), Counting(core.owner_of)
    for i in range(100):
        assert core.begin(f"new{i}", "o", 10, 10, 1)[0] is Decision.GO
    assert reads == 100 * 2  # the oldest lease and the oldest owned key per begin, not 5,000 each


# --- checking answers (one rule for online and batch answers) -----------------------------------

SCORE = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def answer(text: str) -> Answer:
    return Answer(text=text, usage=Usage(10, 5), finish_reason="STOP", latency_s=0.1)


def judged(text, schema=SCORE):
    return judge_answer(answer(text), schema, key="k", cost_usd=0.5, backend="b", model="m", attempts=2)


def test_a_good_answer_becomes_a_result_with_its_parsed_json():
    r = judged('{"score": 7}')
    assert not isinstance(r, OracleError)
    assert (r.parsed, r.key, r.cost_usd, r.attempts, r.usage) == ({"score": 7}, "k", 0.5, 2, Usage(10, 5))
    assert judged("free text", schema=None).parsed is None  # no schema: nothing to parse


@pytest.mark.parametrize(
    "text, why", [("Sure! {'score': 7}", "not JSON"), ('{"score": "seven"}', "does not match the schema")]
)
def test_a_bad_answer_is_invalid_output_with_an_excerpt_of_what_came(text, why):
    r = judged(text + " " * 1000)
    assert isinstance(r, OracleError) and r.kind == ErrorKind.INVALID_OUTPUT
    assert why in str(r) and r.raw.startswith(text[:10]) and len(r.raw) == 300
    with pytest.raises(OracleError, match=why):
        parse_json_answer(text, SCORE)


def test_an_oracle_error_survives_pickling_whole_as_it_does_between_actors():
    import pickle

    e = OracleError(ErrorKind.INVALID_OUTPUT, "cut off", retry_after=1.5, status=200, raw='{"verdict": "Pa')
    back = pickle.loads(pickle.dumps(e))
    assert (back.kind, str(back), back.retry_after, back.status, back.raw) == (
        ErrorKind.INVALID_OUTPUT,
        "cut off",
        1.5,
        200,
        '{"verdict": "Pa',
    )


# an actor's callable as Ray Data holds it: let go of when the actor pool winds down (its
# __del__ closes it then, before Ray ends the process and its children), or kept alive to the end,
# where a __del__ would run only as the interpreter tears its modules down, too late for a vLLM
# engine's own shutdown (the atexit hook closes it before that)
CLOSES = """
import asyncio, gc, json, sys
from crome_ray.oracle.stage import ActorLoop

class Stage:
    def __init__(self, name):
        self.name, self.loop = name, ActorLoop()
        self.loop.close_at_exit(self.aclose)

    async def aclose(self):
        await asyncio.sleep(0.01)  # the loop still runs, and json is still a module
        print(json.dumps({"closed": self.name}), flush=True)

    def __del__(self):
        self.loop.close()

gc.disable()  # a freed stage is freed by its count of references, not by a collection
freed, kept = Stage("freed"), Stage("kept")
kept.me = kept  # a cycle: no __del__ before the interpreter's teardown
del freed
print("let go", flush=True)
"""


def test_an_actors_callers_close_on_its_loop_once_when_it_is_let_go_of_or_at_the_latest_at_exit():
    proc = subprocess.run([sys.executable, "-c", CLOSES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['{"closed": "freed"}', "let go", '{"closed": "kept"}'], proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
