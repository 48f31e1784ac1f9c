"""Pure oracle arithmetic: prices, the sliding-window limiter and the budget, on a fake clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crome_ray.config import ModelPrice, QuotaConfig
from crome_ray.oracle.budget import Budget
from crome_ray.oracle.limits import Grant, RateLimiter, SlidingWindow
from crome_ray.oracle.pricing import call_cost, worst_case_cost
from crome_ray.oracle.protocol import GenerationParams, OracleRequest, Usage

FLASH = ModelPrice(input_per_m=0.30, output_per_m=2.50, cached_input_per_m=0.075)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_cost_bills_thinking_as_output_and_cached_input_at_the_cached_rate():
    u = Usage(input_tokens=1000, output_tokens=200, thinking_tokens=300, cached_tokens=400)
    # 600 uncached * 0.30 + 400 cached * 0.075 + (200 + 300) * 2.50, per million
    assert call_cost(u, FLASH) == pytest.approx((600 * 0.30 + 400 * 0.075 + 500 * 2.50) / 1e6)
    assert call_cost(u, FLASH, batch=True) == pytest.approx(call_cost(u, FLASH) * 0.5)
    assert worst_case_cost(1000, 500, FLASH) == pytest.approx((1000 * 0.30 + 500 * 2.50) / 1e6)


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


def test_budget_refuses_a_reservation_that_could_cross_the_cap():
    saved = []
    b = Budget(cap=1.0, chunk=0.25, persist=lambda alloc, spent: saved.append(alloc))
    r1 = b.reserve(0.6)
    assert r1 and saved == [0.85]  # allowance persisted before the call: 0.6 + chunk
    assert b.reserve(0.5) is None and b.denied == 1
    b.settle(r1, 0.2)  # cheaper than its worst case
    r2 = b.reserve(0.5)
    assert r2 and b.committed == pytest.approx(0.7)
    b.settle(r2, 0.5)
    b.close()
    assert saved[-1] == pytest.approx(0.7) and b.spent == pytest.approx(0.7)


def test_a_resumed_budget_counts_the_crashed_allocation_as_spent():
    saved = []
    b = Budget(cap=1.0, chunk=0.1, persist=lambda alloc, spent: saved.append(alloc))
    b.reserve(0.3)  # in flight when the process dies: never settled, never closed
    resumed = Budget(cap=1.0, chunk=0.1, spent_before=saved[-1])
    assert resumed.remaining == pytest.approx(0.6)
    assert resumed.reserve(0.65) is None


@settings(max_examples=200, deadline=None)
@given(
    cap=st.floats(0.01, 5.0),
    chunk=st.floats(0.001, 1.0),
    input_price=st.floats(0.0, 5.0),
    output_price=st.floats(0.0, 20.0),
    calls=st.lists(
        st.tuples(st.integers(1, 20_000), st.integers(1, 8_000), st.floats(0.0, 1.0), st.booleans()),
        min_size=1,
        max_size=300,
    ),
    concurrency=st.integers(1, 64),
    crash_at=st.integers(0, 300),
)
def test_spend_never_exceeds_the_cap_under_any_interleaving_prices_or_crash(
    cap, chunk, input_price, output_price, calls, concurrency, crash_at
):
    price = ModelPrice(input_per_m=input_price, output_per_m=output_price)
    ledger = [0.0]
    budget = Budget(cap, chunk, persist=lambda alloc, spent: ledger.__setitem__(0, alloc))
    paid = 0.0
    in_flight = []
    for i, (tokens_in, max_out, used_frac, finish_first) in enumerate(calls):
        if i == crash_at:  # the process dies; a new one resumes from the persisted ledger
            paid_before_crash = paid + sum(worst for _, worst, _ in in_flight)  # in-flight calls get billed
            budget = Budget(
                cap, chunk, spent_before=ledger[0], persist=lambda alloc, spent: ledger.__setitem__(0, alloc)
            )
            assert ledger[0] >= paid_before_crash - 1e-9  # the ledger covered everything billed
            in_flight, paid = [], paid_before_crash
        if (finish_first or len(in_flight) >= concurrency) and in_flight:
            r, worst, used = in_flight.pop(0)
            actual = call_cost(Usage(input_tokens=tokens_in, output_tokens=int(max_out * used)), price)
            actual = min(actual, worst)
            budget.settle(r, actual)
            paid += actual
        worst = worst_case_cost(tokens_in, max_out, price)
        r = budget.reserve(worst)
        if r is not None:
            in_flight.append((r, worst, used_frac))
        assert paid + sum(w for _, w, _ in in_flight) <= cap + 1e-9
    for r, worst, used in in_flight:
        budget.settle(r, worst * used)
        paid += worst * used
    assert paid <= cap + 1e-9
    assert budget.overruns == 0
