"""The oracle on a local Ray cluster against the Gemini simulator: a shared quota, the key kept
secret, and resumption after a worker or the driver is killed."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from crome_ray.config import load_config
from crome_ray.oracle.cache import LedgerStore
from crome_ray.oracle.config import OracleJobConfig
from crome_ray.oracle.job import run_oracle_job
from crome_ray.oracle.pricing import call_cost_micros, usd_to_micros
from crome_ray.oracle.protocol import Usage
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.storage import RunFolder
from tests.driver_kill import kill_then_resume

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-SECRET-ray-0123456789abcdef"
SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}},
        "required": ["verdict"],
    }
)


def prompts_file(tmp_path, n):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "prompt": f"Grade answer {i}: it is fine.", "schema": SCHEMA}) + "\n"
            for i in range(n)
        )
    )
    return path


def job_config(tmp_path, sim, n, *over):
    return load_config(
        OracleJobConfig,
        None,
        [
            f"input={prompts_file(tmp_path, n)}",
            f"storage.root={tmp_path / 'runs'}",
            f"oracle.base_url={sim.url}",
            "max_output_tokens=64",
            "oracle.retry.timeout_s=2",
            "oracle.retry.initial_backoff_s=0.05",
            *over,
        ],
    )


def response_ids(result):
    return sorted(int(i) for i in result.run.read_table("responses").column("id").to_pylist())


def billed_micros(stats: dict, cfg: OracleJobConfig) -> int:
    """What the provider would bill for every token the simulator counted (abandoned answers too)."""
    return call_cost_micros(Usage(stats["input_tokens"], stats["output_tokens"]), cfg.oracle.price())


@pytest.mark.ray
def test_four_workers_share_one_quota_without_a_single_over_rate_429(tmp_path, ray_cluster):
    # 40 requests per 4 s window = 600 RPM, enforced by the simulator per key. The slack is the
    # default 1 s: it must cover a grant's trip from the governor to the simulator, which on two
    # loaded cores (4 workers, the governor, the driver, the simulator) took more than the 0.2 s
    # this test once used (11 over-rate 429s in CI, 2026-11-26)
    with RunningSimulator(SimConfig(rpm=40, window_s=4, latency_median_s=0.15)) as sim:
        cfg = job_config(
            tmp_path,
            sim,
            240,
            "workers=4",
            "batch_size=10",
            "worker_cpus=0.25",
            "oracle.quota.rpm=40",
            "oracle.quota.window_s=4",
        )
        started = time.monotonic()
        result = run_oracle_job(cfg, SecretStr(KEY))
        stats = sim.stats.summary()
        times = sorted(sim.stats.answer_times)
    assert stats["quota_429"] == 0 and result.details["oracle"]["throttled"] == 0
    assert result.manifest["counts"]["answered"] == 240 and response_ids(result) == list(range(240))
    # sustained: between the first and the last answer the pace kept up with the quota
    rate = (len(times) - 1) / (times[-1] - times[0])
    quota_rate = 40 / 5.0  # our window is the provider's plus the default 1 s slack
    assert rate >= 0.85 * quota_rate, (rate, quota_rate, time.monotonic() - started)


def files_under(root: Path) -> list[Path]:
    return [
        f
        for f in Path(root).rglob("*")
        if f.is_file() and not f.is_symlink() and f.stat().st_size < 50_000_000
    ]


@pytest.mark.ray
def test_a_key_from_the_environment_reaches_the_workers_and_nothing_the_run_or_ray_writes(
    tmp_path, ray_cluster, monkeypatch
):
    """The entrypoint's own path: the key is only in GEMINI_API_KEY, the CLI reads it, the job runs
    on Ray. The simulator accepts that key alone, so every answer proves a worker held it."""
    import ray
    from typer.testing import CliRunner

    from crome_ray.cli import app

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)

    @ray.remote(num_cpus=0)
    def say(text: str) -> None:
        print(text, flush=True)

    marker = f"log-marker-{uuid.uuid4().hex}"  # what a Ray worker prints lands in the files scanned
    ray.get(say.remote(marker))
    sim_cfg = SimConfig(api_key=KEY, latency_median_s=0.01, p_500=0.2, p_malformed=0.2)
    with RunningSimulator(sim_cfg) as sim:
        args = [
            "oracle",
            "run",
            "--input",
            str(prompts_file(tmp_path, 30)),
            "--output",
            str(tmp_path / "runs"),
            "--base-url",
            sim.url,
            "run_name=secret",
            "max_output_tokens=64",
            "oracle.retry.timeout_s=2",
            "oracle.retry.initial_backoff_s=0.05",
        ]
        res = CliRunner().invoke(app, args)
        stats = sim.stats.summary()
    assert res.exit_code == 0, res.output
    assert stats["unauthorized"] == 0 and stats["answered"] >= 30  # the key reached every worker
    assert KEY not in res.output
    time.sleep(1.0)  # let Ray flush its log files

    run_files = files_under(tmp_path / "runs")
    names = [f.name for f in run_files]
    assert any(n.endswith(".parquet") for n in names) and "manifest.json" in names
    assert "secret.ledger.json" in names and any(n.endswith(".jsonl") for n in names)  # ledger, cache
    logs = files_under(ray_cluster.temp_dir)
    assert any(f.suffix in (".out", ".err", ".log") and "logs" in f.parts for f in logs)
    assert any(marker.encode() in f.read_bytes() for f in logs if "logs" in f.parts), "worker output unseen"
    for f in run_files + logs:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        assert KEY.encode() not in data, f"the API key leaked into {f}"


def oracle_stage_pids() -> list[int]:
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        if "OracleStage" in " ".join(p.info["cmdline"] or []):
            pids.append(p.pid)
    return pids


def governor_stats(run_name: str) -> dict:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    [name] = [n for n in names if n.startswith(f"governor-{run_name}-")]
    return ray.get(ray.get_actor(name, namespace="crome-ray").stats.remote())


@pytest.mark.ray
def test_a_worker_killed_mid_run_is_replaced_and_nothing_but_its_calls_in_flight_is_paid_twice(
    tmp_path, ray_cluster
):
    n = 160
    with RunningSimulator(SimConfig(latency_median_s=0.2, latency_sigma=0.2)) as sim:
        cfg = job_config(
            tmp_path,
            sim,
            n,
            "run_name=killed-worker",
            "workers=2",
            "batch_size=8",
            "oracle.quota.max_in_flight=8",
            "oracle.budget.cap_usd=1.0",
        )
        out: dict = {}

        def run() -> None:
            try:
                out["result"] = run_oracle_job(cfg, SecretStr(KEY))
            except Exception as e:  # the test reports it instead of waiting for answers forever
                out["error"] = e

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 120
        while sim.stats.answered < n // 3 and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.is_alive(), f"the job ended before the kill: {out}"
        pids = oracle_stage_pids()
        assert pids, "no OracleStage actor found"
        before = governor_stats("killed-worker")["in_flight"]
        os.kill(pids[0], signal.SIGKILL)
        # The dead worker's leases stay in the governor until they expire (seconds), so a reading
        # right after the kill counts every call it had in flight, even one granted since `before`.
        in_flight_at_kill = governor_stats("killed-worker")["in_flight"]
        worker.join(180)
        stats = sim.stats.summary()
    result = out["result"]
    assert sorted(response_ids(result)) == list(range(n))
    assert stats["distinct_answered"] == n
    # paid twice: a body billed twice, delivered or abandoned when its worker died mid-call
    assert stats["billed_twice"] <= in_flight_at_kill, (stats["billed_twice"], before, in_flight_at_kill)
    spent = result.details["oracle"]["spent_micros"]
    assert billed_micros(stats, cfg) <= spent <= usd_to_micros(cfg.oracle.budget.cap_usd, round_up=False)


@pytest.mark.ray
@pytest.mark.slow
def test_the_driver_killed_mid_run_then_resumed_pays_only_for_what_it_lacks(tmp_path):
    n = 150
    with RunningSimulator(SimConfig(latency_median_s=0.15, latency_sigma=0.2)) as sim:
        config = {
            "run_name": "resume",
            "input": str(prompts_file(tmp_path, n)),
            "max_output_tokens": 64,
            "workers": 2,
            "batch_size": 8,
            "oracle": {
                "base_url": sim.url,
                "quota": {"max_in_flight": 8},
                "budget": {"cap_usd": 1.0},
                "retry": {"timeout_s": 2},
            },
            "storage": {"root": str(tmp_path / "runs")},
        }
        ledger_uri = str(tmp_path / "runs" / "oracle" / "resume.ledger.json")
        run = kill_then_resume(
            "oracle", config, sim, key=KEY, answered=n // 2, folder=tmp_path,
            inspect=lambda: LedgerStore(ledger_uri).load(),  # what the crashed run had allocated
        )  # fmt: skip
        stats = sim.stats.summary()
    ledger = run.at_kill
    assert ledger and ledger["allocated_micros"] > 0
    assert "answered" in run.second.stdout and "cache hits" in run.second.stdout
    manifest = RunFolder.at(str(tmp_path / "runs"), "oracle", "resume").manifest()
    assert manifest["counts"]["answered"] + manifest["counts"].get("cached", 0) == n
    assert manifest["counts"]["cached"] >= run.answered_at_kill - 8
    assert stats["billed_twice"] <= 8 and stats["distinct_answered"] == n
    oracle = manifest["details"]["oracle"]
    assert oracle["resumed_from_micros"] >= ledger["allocated_micros"]  # the crashed run's allowance
    assert billed_micros(stats, load_config(OracleJobConfig, None)) <= oracle["spent_micros"] <= 1_000_000


def test_a_missing_key_with_no_key_fail_stops_before_ray_starts_and_names_the_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="crk", dir="/tmp")
    proc = subprocess.run(
        [sys.executable, "-m", "crome_ray.cli", "oracle", "run", "no_key=fail", "--output", str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "GEMINI_API_KEY" in proc.stderr and "GOOGLE_API_KEY" in proc.stderr
    assert not list(Path(env["RAY_TMPDIR"]).glob("ray/session_*"))  # Ray never started
