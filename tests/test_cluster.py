"""The cluster path: cluster and infra definitions are valid, and `ray job submit` runs a job."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_the_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema violation
    types = config["available_node_types"]
    assert {"head", "cpu_worker", "gpu_worker"} <= set(types)
    assert "gpu_worker" in types and types["gpu_worker"]["max_workers"] >= 1


def test_the_runtime_env_is_one_ray_accepts_and_holds_no_secret():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**data)
    assert ".venv/" in env["excludes"]
    assert not any(re.search("KEY|SECRET|TOKEN", k) for k in data.get("env_vars", {}))


def test_the_image_uses_the_ray_version_the_package_pins():
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    image_ray = re.search(r"FROM rayproject/ray:(\d+\.\d+)", dockerfile).group(1)
    pinned = re.search(r'"ray\[[^\]]+\]>=(\d+\.\d+)', pyproject).group(1)
    assert image_ray == pinned


def test_the_infra_template_lints_clean():
    proc = subprocess.run(
        [shutil.which("cfn-lint") or "cfn-lint", str(REPO / "infra" / "aws.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_infra_template_deploys_a_bucket_and_the_node_profile(s3):
    import boto3

    cfn = boto3.client("cloudformation", endpoint_url=s3.endpoint, region_name=s3.region)
    cfn.create_stack(
        StackName="crome-ray",
        TemplateBody=(REPO / "infra" / "aws.yaml").read_text(),
        Parameters=[{"ParameterKey": "BucketName", "ParameterValue": "crome-infra-test"}],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    stack = cfn.describe_stacks(StackName="crome-ray")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["StorageRoot"] == "s3://crome-infra-test/runs"
    s3.client().head_bucket(Bucket="crome-infra-test")
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name=s3.region)
    profile = iam.get_instance_profile(InstanceProfileName="crome-ray-node")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["crome-ray-node"]


@pytest.mark.slow
def test_ray_job_submit_runs_the_ingest_job_on_a_local_cluster(tmp_path):
    """`ray start --head` + `ray job submit --working-dir .`, as on a cloud cluster."""
    bin_dir = Path(sys.executable).parent
    temp = tempfile.mkdtemp(prefix="crj", dir="/tmp")
    dash = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
    }
    start = [
        str(bin_dir / "ray"),
        "start",
        "--head",
        "--num-cpus=1",
        f"--port={free_port()}",
        f"--temp-dir={temp}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
    ]
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=120)
        out = tmp_path / "runs"
        proc = subprocess.run(
            [
                str(bin_dir / "ray"),
                "job",
                "submit",
                "--working-dir",
                ".",
                "--runtime-env",
                "cluster/runtime_env.yaml",
                "--",
                "python",
                "jobs/ingest.py",
                "--config",
                "jobs/configs/ingest.yaml",
                f"storage.root={out}",
                "run_name=submitted",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "succeeded" in proc.stdout and "pairs written" in proc.stdout
        assert (out / "ingest" / "submitted" / "_COMMITTED").exists()
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(temp_dir: str) -> None:
    """Kill only the processes of the cluster started in temp_dir (`ray stop` would kill every
    Ray cluster on the machine, the test session's own included)."""
    import psutil

    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in arg for arg in proc.info["cmdline"] or []):
            roots.append(proc)
    victims = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    for p in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(list(victims.values()), timeout=30)
