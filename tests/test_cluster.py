"""The cluster path: cluster and infra definitions are valid, and `ray job submit` runs a job."""

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import yaml

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
