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
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from crome_ray.config import OracleJobConfig, load_config
from crome_ray.oracle.cache import LedgerStore
from crome_ray.oracle.job import run_oracle_job
from crome_ray.oracle.pricing import call_cost
from crome_ray.oracle.protocol import Usage
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from tests.test_cluster import stop_cluster

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
    files = result.manifest["tables"]["responses"]
    return sorted(int(i) for f in files for i in pq.read_table(result.run.file(f)).column("id").to_pylist())


@pytest.mark.ray
def test_four_workers_share_one_quota_without_a_single_over_rate_429(tmp_path, ray_cluster):
    # 40 requests per 4 s window = 600 RPM, enforced by the simulator per key
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
            "oracle.quota.window_slack_s=0.2",
        )
        started = time.monotonic()
        result = run_oracle_job(cfg, SecretStr(KEY))
        stats = sim.stats.summary()
        times = sorted(sim.stats.answer_times)
    assert stats["quota_429"] == 0 and result.manifest["oracle"]["throttled"] == 0
    assert result.manifest["counts"]["answered"] == 240 and response_ids(result) == list(range(240))
    # sustained: between the first and the last answer the pace kept up with the quota
    rate = (len(times) - 1) / (times[-1] - times[0])
    quota_rate = 40 / 4.2  # our window is the provider's plus the slack
    assert rate >= 0.85 * quota_rate, (rate, quota_rate, time.monotonic() - started)


@pytest.mark.ray
def test_the_key_appears_in_nothing_the_run_writes_nor_in_rays_logs(tmp_path, ray_cluster):
    with RunningSimulator(SimConfig(latency_median_s=0.01, p_500=0.2, p_malformed=0.2)) as sim:
        cfg = job_config(tmp_path, sim, 30)
        result = run_oracle_job(cfg, SecretStr(KEY))
    assert result.manifest["counts"]["prompts"] == 30
    time.sleep(1.0)  # let Ray flush its log files
    scanned = 0
    for root in (tmp_path, ray_cluster.temp_dir):
        for f in Path(root).rglob("*"):
            if f.is_file() and not f.is_symlink() and f.stat().st_size < 50_000_000:
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                scanned += 1
                assert KEY.encode() not in data, f"the API key leaked into {f}"
    assert scanned > 20


def oracle_stage_pids() -> list[int]:
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        if "OracleStage" in " ".join(p.info["cmdline"] or []):
            pids.append(p.pid)
    return pids


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
            "workers=2",
            "batch_size=8",
            "oracle.quota.max_in_flight=8",
            "oracle.budget.cap_usd=1.0",
        )
        out: dict = {}
        worker = threading.Thread(
            target=lambda: out.setdefault("result", run_oracle_job(cfg, SecretStr(KEY)))
        )
        worker.start()
        while sim.stats.answered < n // 3:
            time.sleep(0.05)
        pids = oracle_stage_pids()
        assert pids, "no OracleStage actor found"
        os.kill(pids[0], signal.SIGKILL)
        worker.join(180)
        stats = sim.stats.summary()
    result = out["result"]
    assert sorted(response_ids(result)) == list(range(n))
    assert stats["answered_twice"] <= 8  # at most the calls that were in flight at the kill
    assert stats["distinct_answered"] == n
    billed = call_cost(Usage(stats["input_tokens"], stats["output_tokens"]), cfg.oracle.price())
    assert billed <= result.manifest["oracle"]["spent_usd"] + 1e-9 <= cfg.oracle.budget.cap_usd


def driver_command(config_path: Path) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "oracle.py"), "--config", str(config_path)]


@pytest.mark.ray
@pytest.mark.slow
def test_the_driver_killed_mid_run_then_resumed_pays_only_for_what_it_lacks(tmp_path):
    n = 150
    ray_tmp = tempfile.mkdtemp(prefix="crd", dir="/tmp")
    with RunningSimulator(SimConfig(latency_median_s=0.15, latency_sigma=0.2)) as sim:
        cfg_path = tmp_path / "oracle.yaml"
        cfg_path.write_text(
            json.dumps(
                {
                    "job": "oracle",
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
            )
        )
        env = {**os.environ, "GEMINI_API_KEY": KEY, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
        env.pop("RAY_ADDRESS", None)
        first = subprocess.Popen(
            driver_command(cfg_path),
            env=env,
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while sim.stats.answered < n // 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started dies at once
        stop_cluster(ray_tmp)
        first.wait(30)
        answered_at_kill = sim.stats.answered
        ledger = LedgerStore(str(tmp_path / "runs" / "oracle" / "resume.ledger.json")).load()
        assert ledger and ledger["allocated"] > 0

        second = subprocess.run(
            driver_command(cfg_path), env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        stop_cluster(ray_tmp)
        stats = sim.stats.summary()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "answered" in second.stdout and "cache hits" in second.stdout
    manifest = json.loads((tmp_path / "runs" / "oracle" / "resume" / "manifest.json").read_text())
    assert manifest["counts"]["answered"] + manifest["counts"].get("cached", 0) == n
    assert manifest["counts"]["cached"] >= answered_at_kill - 8
    assert stats["answered_twice"] <= 8 and stats["distinct_answered"] == n
    assert manifest["oracle"]["resumed_from_usd"] >= ledger["allocated"] - 1e-12
    billed = call_cost(
        Usage(stats["input_tokens"], stats["output_tokens"]),
        load_config(OracleJobConfig, None).oracle.price(),
    )
    assert billed <= manifest["oracle"]["spent_usd"] + 1e-9 <= 1.0


def test_a_missing_key_fails_before_ray_starts_and_names_the_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="crk", dir="/tmp")
    proc = subprocess.run(
        [sys.executable, "-m", "crome_ray.cli", "oracle", "run", "--output", str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "GEMINI_API_KEY" in proc.stderr and "GOOGLE_API_KEY" in proc.stderr
    assert not list(Path(env["RAY_TMPDIR"]).glob("ray/session_*"))  # Ray never started
