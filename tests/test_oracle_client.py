"""Oracle calls through the real google-genai client against the Gemini simulator, in one process:
retries, retryDelay, invalid output, the cache and the cap."""

import asyncio

import pytest

from crome_ray.config import load_config
from crome_ray.oracle.cache import LedgerStore, ResponseCache
from crome_ray.oracle.client import OracleClient
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.gemini import GeminiBackend, answer_from_response
from crome_ray.oracle.governor import LocalGovernor
from crome_ray.oracle.governor_core import GovernorCore
from crome_ray.oracle.pricing import call_cost_micros
from crome_ray.oracle.protocol import (
    ErrorKind,
    GenerationParams,
    OracleError,
    OracleRequest,
    OracleResult,
    Usage,
)
from crome_ray.oracle.simulator import RunningSimulator, SimConfig, lower_camel

KEY = "sk-SECRET-do-not-leak-0123456789"
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}


def oracle_config(sim, **over) -> OracleConfig:
    base = [
        "retry.initial_backoff_s=0.05",
        "retry.max_backoff_s=0.5",
        "retry.timeout_s=5",
        "quota.window_slack_s=0.0",
        f"base_url={sim.url}",
    ]
    return load_config(OracleConfig, None, [*base, *[f"{k}={v}" for k, v in over.items()]])


def make_client(cfg, tmp_path):
    cache = ResponseCache(str(tmp_path / "cache"), "gemini", cfg.model)
    core = GovernorCore(cfg, LedgerStore(str(tmp_path / "ledger.json")), cache.scan())
    return OracleClient(cfg, GeminiBackend(cfg, KEY), LocalGovernor(core), cache), core


def requests(n, **kw):
    return [
        OracleRequest(
            f"Check rewrite number {i}.",
            system="You verify rewrites.",
            json_schema=SCHEMA,
            params=GenerationParams(max_output_tokens=256),
            **kw,
        )
        for i in range(n)
    ]


def run(client, reqs):
    return asyncio.run(client.call_many(reqs))


def micros(result) -> int:
    """A result's cost back in whole micro-dollars (it is stored as dollars for display)."""
    return round(result.cost_usd * 1_000_000)


@pytest.fixture()
def sim():
    with RunningSimulator(SimConfig(latency_median_s=0.01)) as s:
        yield s


def test_answers_are_parsed_priced_and_a_second_run_pays_for_nothing(sim, tmp_path):
    cfg = oracle_config(sim)
    client, core = make_client(cfg, tmp_path)
    first = run(client, requests(20))
    assert all(isinstance(r, OracleResult) and r.parsed["verdict"] in ("Pass", "Fail") for r in first)
    ledger = LedgerStore(str(tmp_path / "ledger.json")).load()
    assert core.resumed_from == 0 and ledger["allocated_micros"] >= core.budget.spent > 0
    assert all(micros(r) == call_cost_micros(r.usage, cfg.price()) > 0 for r in first)
    assert core.budget.spent == sum(micros(r) for r in first)  # exact: whole micro-dollars
    assert sim.stats.answered == 20
    core.close()  # a clean end persists the exact spend

    client2, core2 = make_client(cfg, tmp_path)  # a new process: cache and ledger from storage
    again = run(client2, requests(20))
    assert sim.stats.answered == 20  # nothing asked twice
    assert [r.parsed for r in again] == [r.parsed for r in first]
    assert all(r.cached and r.cost_usd == 0 for r in again)
    assert core2.counts["hits"] == 20
    assert core2.resumed_from == sum(micros(r) for r in first)
    assert LedgerStore(str(tmp_path / "ledger.json")).load()["spent_micros"] == core2.resumed_from


def test_identical_requests_in_flight_together_are_paid_once(sim, tmp_path):
    client, _core = make_client(oracle_config(sim), tmp_path)
    results = run(client, requests(1) * 8)
    assert sim.stats.answered == 1 and sum(r.cached for r in results) == 7


@pytest.mark.parametrize("hint", ["body", "header"])
def test_a_429_is_retried_once_and_no_sooner_than_the_server_asked(tmp_path, hint):
    """The server's delay (RetryInfo.retryDelay in the body, or a Retry-After header) is far longer
    than our own backoff (<= 0.05 s here): only honouring it can space the two attempts that far."""
    delay = 1.0
    sim_cfg = SimConfig(first_429s=1, capacity_retry_delay_s=delay, retry_hint=hint, latency_median_s=0.01)
    with RunningSimulator(sim_cfg) as sim:
        cfg = oracle_config(sim, **{"retry.initial_backoff_s": 0.01, "retry.max_backoff_s": 0.05})
        client, core = make_client(cfg, tmp_path)
        [r] = run(client, requests(1))
        arrivals = list(sim.stats.arrivals)
    assert isinstance(r, OracleResult) and r.attempts == 2
    assert len(arrivals) == 2, arrivals  # the 429, then exactly one retry
    (first, body), (retry, same_body) = arrivals
    assert body == same_body  # of the same request
    assert retry - first >= delay
    assert sim.stats.capacity_429 == 1 and core.counts["throttled"] == 1
    assert core.limiter.scale < 1.0  # and the governor slowed everyone down


RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@pytest.mark.parametrize(
    "details, headers, seconds",
    [
        ({"error": {"details": [{"@type": RETRY_INFO, "retryDelay": "1.5s"}]}}, None, 1.5),
        (
            {"error": {"details": [{"@type": "x.ErrorInfo"}, {"@type": RETRY_INFO, "retryDelay": "30s"}]}},
            None,
            30,
        ),
        ({"error": {"details": [{"@type": RETRY_INFO, "retryDelay": "0.250s"}]}}, {"Retry-After": "9"}, 0.25),
        ({"error": {"message": "no RetryInfo"}}, {"Retry-After": "7"}, 7),
        (None, {"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30),  # an HTTP-date, 30 s after "now"
        (None, {"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0),  # already past: no wait
        ({"error": {"details": [{"@type": RETRY_INFO, "retryDelay": "1.5"}]}}, None, None),  # no unit
        (None, {"Retry-After": "soon"}, None),
        (None, {"Retry-After": "nan"}, None),
        ("not a dict", None, None),
        (None, None, None),
    ],
)
def test_the_delay_a_server_asks_for_is_read_from_retry_info_or_retry_after(details, headers, seconds):
    from datetime import UTC, datetime

    from multidict import CIMultiDict

    from crome_ray.oracle.gemini import retry_delay

    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    got = retry_delay(details, CIMultiDict(headers) if headers else None, now=now)  # as aiohttp hands them
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_malformed_json_is_asked_again_a_bounded_number_of_times_then_recorded(tmp_path):
    with RunningSimulator(SimConfig(p_malformed=1.0, latency_median_s=0.01)) as sim:
        cfg = oracle_config(sim, **{"retry.invalid_output_attempts": 3})
        client, core = make_client(cfg, tmp_path)
        [r] = run(client, requests(1))
    assert isinstance(r, OracleError) and r.kind == ErrorKind.INVALID_OUTPUT
    assert "not JSON" in str(r) and r.raw.startswith("Sure! Here is the JSON")
    assert sim.stats.answered == 3  # billed three times, then given up
    assert core.budget.spent > 0 and core.counts["invalid_output"] == 3


def test_truncated_json_is_invalid_output_too(tmp_path):
    with RunningSimulator(SimConfig(p_truncated=1.0, latency_median_s=0.01)) as sim:
        client, _ = make_client(oracle_config(sim, **{"retry.invalid_output_attempts": 1}), tmp_path)
        [r] = run(client, requests(1))
    assert isinstance(r, OracleError) and r.kind == ErrorKind.INVALID_OUTPUT


def test_server_errors_and_hangs_are_retried_and_nothing_is_answered_twice(tmp_path):
    sim_cfg = SimConfig(p_500=0.25, p_503=0.15, p_hang=0.1, hang_s=3, latency_median_s=0.01, seed=3)
    with RunningSimulator(sim_cfg) as sim:
        cfg = oracle_config(sim, **{"retry.timeout_s": 0.5, "retry.max_attempts": 10})
        client, core = make_client(cfg, tmp_path)
        results = run(client, requests(30))
        stats = sim.stats.summary()
    assert all(isinstance(r, OracleResult) for r in results), [
        str(r) for r in results if isinstance(r, OracleError)
    ]
    assert stats["server_errors"] > 0 and stats["hangs"] > 0
    assert stats["answered_twice"] == 0 and stats["distinct_answered"] == 30
    # a timed-out call may still be billed: the budget counted each one at its worst case
    assert stats["abandoned"] <= stats["hangs"]
    worst = sum(client._sizes(r)[2] for r in requests(30))
    assert core.budget.spent >= sum(micros(r) for r in results)
    assert core.budget.spent <= sum(micros(r) for r in results) + worst
    assert max(r.attempts for r in results) > 1


def test_when_the_cap_is_reached_the_rest_is_marked_budget_exhausted(sim, tmp_path):
    cfg = oracle_config(sim, **{"budget.cap_usd": 0.004})
    client, core = make_client(cfg, tmp_path)
    results = run(client, requests(40))
    exhausted = [r for r in results if isinstance(r, OracleError) and r.kind == ErrorKind.BUDGET_EXHAUSTED]
    assert exhausted and len(exhausted) < 40
    # what the provider would bill, from its own token counts, stays under the cap
    billed = call_cost_micros(Usage(sim.stats.input_tokens, sim.stats.output_tokens), cfg.price())
    assert billed <= core.budget.spent <= 4_000


def test_a_fatal_error_is_not_retried(tmp_path):
    with RunningSimulator(SimConfig(api_key="the-right-key", latency_median_s=0.01)) as sim:
        client, _core = make_client(oracle_config(sim), tmp_path)
        [r] = run(client, requests(1))
        assert isinstance(r, OracleError) and r.kind == ErrorKind.FATAL and r.status == 400
        assert sim.stats.unauthorized == 1 and KEY not in str(r)


def test_a_retired_model_fails_before_any_paid_call(sim):
    cfg = oracle_config(sim, model="gemini-1.0-pro")
    with pytest.raises(OracleError, match=r"not available \(retired") as e:
        asyncio.run(GeminiBackend(cfg, KEY).check_model())
    assert e.value.kind == ErrorKind.FATAL and sim.stats.requests == 0


def test_the_key_is_in_nothing_the_oracle_writes(sim, tmp_path):
    client, core = make_client(oracle_config(sim), tmp_path)
    run(client, requests(5))
    core.close()
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_oracle_probe_checks_key_and_model_with_one_call_and_prints_no_secret(sim, monkeypatch):
    from typer.testing import CliRunner

    from crome_ray.cli import app

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    res = CliRunner().invoke(app, ["oracle", "probe", "--base-url", sim.url])
    assert res.exit_code == 0, res.output
    assert "ok" in res.output and "gemini-2.5-flash" in res.output and KEY not in res.output
    assert sim.stats.model_gets == 1 and sim.stats.answered == 1
    bad = CliRunner().invoke(app, ["oracle", "probe", "--base-url", sim.url, "--model", "gemini-0.9"])
    assert bad.exit_code == 1 and "not available" in bad.output and KEY not in bad.output


def test_a_backend_made_in_the_event_loop_skips_proxy_discovery_and_still_times_out(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with RunningSimulator(SimConfig(p_hang=0.3, hang_s=3, latency_median_s=0.01, seed=5)) as sim:
        cfg = oracle_config(sim, **{"retry.timeout_s": 0.5, "retry.max_attempts": 10})

        async def go():
            backend = GeminiBackend(cfg, KEY)  # inside the loop, as in the Ray stage
            session = backend.client._api_client._http_options.aiohttp_client
            assert session is not None and session.trust_env is False
            cache = ResponseCache(str(tmp_path / "cache"), "gemini", cfg.model)
            client = OracleClient(cfg, backend, LocalGovernor(GovernorCore(cfg)), cache)
            return await client.call_many(requests(12))

        results = asyncio.run(go())
    assert sim.stats.hangs > 0 and all(isinstance(r, OracleResult) for r in results)


def test_with_a_proxy_configured_the_sdk_session_and_its_proxy_support_stay(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")

    async def make():
        return GeminiBackend(load_config(OracleConfig, None), KEY)

    backend = asyncio.run(make())
    assert backend.client._api_client._http_options.aiohttp_client is None


@pytest.mark.parametrize(
    "req, thinking",
    [
        (OracleRequest("Grade this.", system="You grade.", json_schema=SCHEMA), None),
        (OracleRequest("Plain text, no schema, no system."), None),
        (
            OracleRequest(
                "Rewrite it: naïve café ☕",
                system="s",
                json_schema=SCHEMA,
                params=GenerationParams(temperature=0.7, top_p=0.9, seed=11, max_output_tokens=33),
            ),
            0,
        ),
    ],
)
def test_the_rest_body_we_send_is_the_one_the_sdk_would_make(req, thinking):
    """The API reads lowerCamel and snake_case field names alike: compared in one spelling."""
    from google.genai import _common, models, types

    cfg = load_config(
        OracleConfig,
        None,
        ["base_url=http://127.0.0.1:9"] + ([f"thinking_budget={thinking}"] if thinking is not None else []),
    )
    backend = GeminiBackend(cfg, KEY)
    params = types._GenerateContentParameters(
        model=cfg.model, contents=req.prompt, config=backend.generation_config(req)
    )
    sdk = _common.convert_to_dict(
        models._GenerateContentParameters_to_mldev(backend.client._api_client, params, None, params)
    )
    sdk.pop("_url", None), sdk.pop("_query", None), sdk.pop("config", None)
    assert lower_camel(backend.wire_request(req)) == lower_camel(sdk)


def test_an_answer_read_from_the_wire_equals_the_sdks_reading_of_it(sim):
    cfg = oracle_config(sim, thinking_budget=64)
    req = OracleRequest("Check rewrite 7.", system="You verify.", json_schema=SCHEMA)

    async def both():
        backend = GeminiBackend(cfg, KEY)
        fast = await backend.generate(req)
        response = await backend.client.aio.models.generate_content(
            model=cfg.model, contents=req.prompt, config=backend.generation_config(req)
        )
        await backend.aclose()
        return fast, answer_from_response(response, 0.0)

    fast, sdk = asyncio.run(both())
    assert fast.text and fast.text == sdk.text
    assert fast.usage == sdk.usage and fast.usage.input_tokens > 0
    assert fast.finish_reason == sdk.finish_reason == "STOP"


def test_backends_come_from_one_registry_that_names_the_known_ones_for_an_unknown_name():
    import typing

    from crome_ray.oracle import backends

    cfg = load_config(OracleConfig, None, ["base_url=http://127.0.0.1:9"])
    gemini = backends.make_backend(cfg, KEY)
    assert type(gemini) is GeminiBackend and isinstance(gemini, backends.OracleBackend)
    assert gemini.price == cfg.price()  # what it charges comes from the config
    # every backend the config accepts can be made, and the registry knows no other
    assert set(typing.get_args(OracleConfig.model_fields["backend"].annotation)) == set(
        backends.known_backends()
    )
    with pytest.raises(
        ValueError, match=r"oracle.backend 'nope' is not a known backend; known backends: gemini"
    ):
        backends.make_backend(cfg.model_copy(update={"backend": "nope"}), KEY)


def test_a_registered_backend_is_made_by_name_and_a_name_cannot_be_taken_twice(monkeypatch):
    from crome_ray.oracle import backends

    monkeypatch.setattr(backends, "_registry", dict(backends._registry))

    @backends.register_backend("echo")
    class Echo:
        name = "echo"

        def __init__(self, config, api_key):
            self.config, self.api_key = config, api_key

    cfg = load_config(OracleConfig, None).model_copy(update={"backend": "echo"})
    made = backends.make_backend(cfg, "k")
    assert type(made) is Echo and made.api_key == "k" and "echo" in backends.known_backends()
    with pytest.raises(ValueError, match="'gemini' is registered already"):
        backends.register_backend("gemini")(Echo)
