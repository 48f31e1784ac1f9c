"""KubeRay manifests (cluster/kuberay/): valid against KubeRay's own CRD schemas, vendored in
cluster/kuberay/schemas/ (KubeRay v1.5.2; no cluster and no network needed), and right for
crome-ray: no secret written in them, one GPU per GPU pod, the RayJob running the pipeline on the
RayCluster's spec with the runtime env of cluster/runtime_env.yaml from the image's working dir.

The check is as strict as `kubectl apply` (which refuses unknown fields by default): a field the
schema does not name is refused, except where Kubernetes keeps unknown fields
(x-kubernetes-preserve-unknown-fields) or the schema allows any (additionalProperties). The CRDs'
CEL rules (x-kubernetes-validations) are not evaluated."""

import copy
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from crome_ray.job_configs import load_job_config

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "cluster" / "kuberay"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)


def manifests(name: str) -> dict[str, dict]:
    """The documents of cluster/kuberay/<name>.yaml by kind."""
    docs = list(yaml.safe_load_all((KUBERAY / f"{name}.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{name}.yaml holds one document of each kind"
    return by_kind


def strict(schema: object) -> object:
    """The schema with `additionalProperties: false` on every object that lists its properties and
    neither allows other ones nor keeps unknown fields: what the API server's strict field
    validation refuses."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((KUBERAY / "schemas" / f"{kind.lower()}-v1.json").read_text())
    return jsonschema.Draft7Validator(strict(schema))


def schema_errors(doc: dict) -> list[str]:
    errors = validator(doc["kind"]).iter_errors(doc)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def cluster_specs() -> Iterator[tuple[str, dict]]:
    yield "RayCluster", manifests("raycluster")["RayCluster"]["spec"]
    yield "RayJob", manifests("rayjob")["RayJob"]["spec"]["rayClusterSpec"]


CLUSTER_SPECS = [pytest.param(kind, spec, id=kind) for kind, spec in cluster_specs()]


def groups(spec: dict) -> dict[str, dict]:
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def containers(spec: dict) -> Iterator[tuple[str, dict]]:
    for name, group in groups(spec).items():
        pod = group["template"]["spec"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            yield name, c


def literal_secrets(spec: dict) -> list[str]:
    """Env vars whose name says secret but whose value is written out instead of referenced."""
    return [
        f"{group}/{c['name']}: {env['name']}"
        for group, c in containers(spec)
        for env in c.get("env", [])
        if SECRET_NAME.search(env["name"])
        and ("value" in env or "secretKeyRef" not in env.get("valueFrom", {}))
    ]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- the CRD schemas -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("raycluster", "RayCluster"), ("rayjob", "RayJob")])
def test_the_manifests_pass_kuberays_crd_schema(name, kind):
    doc = manifests(name)[kind]
    assert doc["apiVersion"] == "ray.io/v1"
    assert schema_errors(doc) == []
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def _worker(doc: dict, group: str) -> dict:
    return next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == group)


def _container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def _misspell(mapping: dict, key: str, wrong: str) -> None:
    mapping[wrong] = mapping.pop(key)


BREAKAGES: dict[str, Callable[[dict], None]] = {
    "replicas as a word": lambda d: _worker(d, "gpu-worker").update(replicas="two"),
    "a worker group without its name": lambda d: _worker(d, "cpu-worker").pop("groupName"),
    "a misspelt field": lambda d: _misspell(d["spec"]["headGroupSpec"], "rayStartParams", "rayStartParam"),
    "a ray start parameter as a number": lambda d: _worker(d, "gpu-worker")["rayStartParams"].update(
        {"num-gpus": 1}
    ),
    "an auth mode KubeRay does not know": lambda d: d["spec"]["authOptions"].update(mode="password"),
    "a container without its name": lambda d: _container(d["spec"]["headGroupSpec"]).pop("name"),
    "a GPU limit as a list": lambda d: _container(_worker(d, "gpu-worker"))["resources"]["limits"].update(
        {"nvidia.com/gpu": [1]}
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_schema_check_refuses_a_broken_raycluster(breakage):
    doc = copy.deepcopy(manifests("raycluster")["RayCluster"])
    BREAKAGES[breakage](doc)
    assert schema_errors(doc), f"{breakage} passed the schema"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s.update(shutdownAfterJobFinishes="yes"),
        lambda s: _misspell(s, "entrypoint", "entryPoint"),
        lambda s: s["rayClusterSpec"].pop("headGroupSpec"),
    ],
    ids=["a boolean as a word", "a misspelt field", "a cluster without a head"],
)
def test_the_schema_check_refuses_a_broken_rayjob(breakage):
    doc = copy.deepcopy(manifests("rayjob")["RayJob"])
    breakage(doc["spec"])
    assert schema_errors(doc)


def test_the_vendored_schemas_are_kuberays_v1_and_say_where_they_come_from():
    readme = (KUBERAY / "schemas" / "README.md").read_text()
    tag = re.search(r"tag \*\*v(\d+)\.(\d+)\.(\d+)\*\*", readme)
    assert tag and (1, 3) <= (int(tag.group(1)), int(tag.group(2))) <= (1, 5)
    assert re.search(r"commit\s+`[0-9a-f]{40}`", readme)
    for kind in ("RayCluster", "RayJob"):
        schema = json.loads((KUBERAY / "schemas" / f"{kind.lower()}-v1.json").read_text())
        assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(schema["properties"])
        jsonschema.Draft7Validator.check_schema(schema)


# --- what crome-ray needs of them ------------------------------------------------------------


@pytest.mark.parametrize(("kind", "spec"), CLUSTER_SPECS)
def test_no_secret_is_written_in_a_manifest(kind, spec):
    """Env vars named like a secret come from a Kubernetes Secret (valueFrom.secretKeyRef)."""
    assert literal_secrets(spec) == []
    names = {e["name"] for _, c in containers(spec) for e in c.get("env", [])}
    assert "GEMINI_API_KEY" in names
    text = (KUBERAY / f"{kind.lower()}.yaml").read_text()
    assert not re.search(r"AIza[0-9A-Za-z_-]{20,}|hf_[A-Za-z]{20,}", text)  # no key pasted anywhere


def test_the_secret_check_refuses_a_key_written_out():
    spec = copy.deepcopy(manifests("raycluster")["RayCluster"]["spec"])
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [{"name": "GEMINI_API_KEY", "value": "AIza-not-a-real-key"}]
    assert literal_secrets(spec) == ["head/ray-head: GEMINI_API_KEY"]


def test_the_gemini_key_reaches_the_head_where_the_drivers_run_from_the_secret_the_docs_make():
    """The drivers run on the head and hand the key to the oracle actors; the Secret's name and key
    are those of the `kubectl create secret` command in docs/cluster.md."""
    docs = (REPO / "docs" / "cluster.md").read_text()
    made = dict(re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", docs))
    assert set(made) == {"crome-ray-gemini", "crome-ray-hf"}
    for _, spec in cluster_specs():
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        ref = env_of(head)["GEMINI_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert made[ref["name"]] == ref["key"] == "GEMINI_API_KEY"
        for group, c in containers(spec):
            hf = env_of(c)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert made[hf["name"]] == hf["key"] == "HF_TOKEN", group
            assert group == "head" or "GEMINI_API_KEY" not in env_of(c)


@pytest.mark.parametrize(("kind", "spec"), CLUSTER_SPECS)
def test_only_the_gpu_group_asks_for_gpus_one_per_pod(kind, spec):
    by_group = groups(spec)
    assert set(by_group) == {"head", "cpu-worker", "gpu-worker"}
    for name, group in by_group.items():
        (c,) = group["template"]["spec"]["containers"]
        res = c["resources"]
        gpus = {res["requests"].get("nvidia.com/gpu"), res["limits"].get("nvidia.com/gpu")}
        assert gpus == ({1} if name == "gpu-worker" else {None}), name
        assert res["requests"]["cpu"] == res["limits"]["cpu"]  # Ray counts the limit as its CPUs
    for name, group in by_group.items():
        if name != "head":  # the operator's own check, which the schema cannot express
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


def test_the_pods_run_as_the_service_account_the_clouds_grant_the_bucket():
    gcp = yaml.safe_load((REPO / "cluster" / "gcp.yaml").read_text())
    node_email = gcp["available_node_types"]["gpu_worker"]["node_config"]["serviceAccounts"][0]["email"]
    for name in ("raycluster", "rayjob"):
        account = manifests(name)["ServiceAccount"]
        assert account == manifests("raycluster")["ServiceAccount"]
        notes = account["metadata"]["annotations"]
        assert notes["iam.gke.io/gcp-service-account"] == node_email
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/crome-ray-pod", notes["eks.amazonaws.com/role-arn"])
    for _, spec in cluster_specs():
        for group in groups(spec).values():
            assert group["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_the_rayjob_runs_the_pipeline_on_the_rayclusters_spec_and_cleans_up():
    job = manifests("rayjob")["RayJob"]["spec"]
    assert job["rayClusterSpec"] == manifests("raycluster")["RayCluster"]["spec"]
    args = job["entrypoint"].split()
    assert args[:4] == ["python", "jobs/pipeline.py", "--config", "jobs/configs/pipeline.yaml"]
    assert (REPO / args[1]).is_file() and (REPO / args[3]).is_file()
    (root,) = [a.split("=", 1)[1] for a in args[4:] if a.startswith("storage.root=")]
    assert re.fullmatch(r"(gs|s3)://[a-z0-9.-]+/runs", root)
    assert load_job_config(REPO / args[3], args[4:]).storage.root == root  # the overrides load
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0


def test_the_rayjob_runs_with_the_cluster_runtime_env_in_the_images_working_dir():
    """The working dir is the image's copy of jobs/ and data/samples/ (the submitter pod runs the
    image); the rest is cluster/runtime_env.yaml, so a job runs alike from either way in."""
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(manifests("rayjob")["RayJob"]["spec"]["runtimeEnvYAML"])
    working_dir = env.pop("working_dir")  # a path in the image: Ray checks it where it submits
    RuntimeEnv(**env)
    assert env == yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    for dockerfile in ("Dockerfile", "Dockerfile.cpu"):
        text = (REPO / "infra" / dockerfile).read_text()
        assert re.search(rf"^WORKDIR {re.escape(working_dir)}$", text, re.M), dockerfile
        copied = set(re.findall(r"^COPY (?:--chown=\S+ )?(\S+) \./\1$", text, re.M))
        assert {"jobs", "data/samples"} <= copied, dockerfile
    # what the pipeline reads from the working dir is in what the image copies
    config = (REPO / "jobs" / "configs" / "pipeline.yaml").read_text()
    local = re.findall(r":\s*(data/\S+)", config)
    assert local and all(p.startswith("data/samples/") and (REPO / p).exists() for p in local)


def test_the_clusters_ray_version_is_the_images():
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    image_ray = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-", dockerfile, re.M).group(1)
    for _, spec in cluster_specs():
        assert spec["rayVersion"] == image_ray
        assert spec["authOptions"] == {"mode": "token"}  # Ray 2.60's default: KubeRay makes the token
