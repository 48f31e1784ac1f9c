"""The GCP infrastructure (infra/gcp/*.tf), the counterpart of infra/aws.yaml: parsed with
python-hcl2 and checked for what it must make. Terraform's own `fmt -check` runs where a terraform
binary is on PATH; `terraform validate`/`plan` need the Google provider plugin (a download) and
are not run here."""

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "infra" / "gcp"
OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)


def parse(text: str) -> dict:
    return hcl2.loads(text, serialization_options=OPTIONS)


@cache
def module() -> dict[str, dict]:
    """Each file of infra/gcp parsed."""
    return {f.name: parse(f.read_text()) for f in sorted(TF.glob("*.tf"))}


def blocks(kind: str) -> dict[str, dict]:
    """`resource`/`data` blocks as {"type.name": body}; `variable`/`output` as {name: body}."""
    out = {}
    for parsed in module().values():
        for entry in parsed.get(kind, []):
            for type_or_name, body in entry.items():
                if kind in ("resource", "data"):
                    out.update({f"{type_or_name}.{name}": b for name, b in body.items()})
                else:
                    out[type_or_name] = body
    return out


def undeclared_variables(files: dict[str, dict]) -> set[str]:
    declared = {name for parsed in files.values() for entry in parsed.get("variable", []) for name in entry}
    used = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", json.dumps(files)))
    return used - declared


def test_the_module_has_its_three_files_and_they_parse():
    assert set(module()) == {"main.tf", "variables.tf", "outputs.tf"}
    provider = module()["main.tf"]["terraform"][0]["required_providers"][0]["google"]
    assert provider["source"] == "hashicorp/google"


def test_every_variable_used_is_declared_and_every_declared_one_used():
    files = module()
    assert undeclared_variables(files) == set()
    declared = set(blocks("variable"))
    used = set(
        re.findall(r"\bvar\.(\w+)", json.dumps({k: v for k, v in files.items() if k != "variables.tf"}))
    )
    assert declared == used
    for name, body in blocks("variable").items():
        assert body.get("description"), f"variable {name} says what it is"


def test_the_variable_check_finds_an_undeclared_one():
    files = dict(module())
    broken = (
        (TF / "outputs.tf").read_text().replace("google_storage_bucket.data.name}/runs", "var.buckt}/runs")
    )
    files["outputs.tf"] = parse(broken)
    assert undeclared_variables(files) == {"buckt"}


def test_every_reference_names_a_resource_or_data_source_the_module_declares():
    declared = set(blocks("resource")) | {f"data.{k}" for k in blocks("data")}
    text = json.dumps(module())
    referenced = set(re.findall(r"(?<![\w.])((?:data\.)?google_\w+\.\w+)\.\w+", text))
    assert referenced and referenced <= declared
    assert "data.google_project.this" in referenced


def test_the_bucket_is_private_versioned_and_uniform():
    bucket = blocks("resource")["google_storage_bucket.data"]
    assert bucket["name"] == "${var.bucket_name}"
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"] == [{"enabled": True}]
    assert bucket["force_destroy"] is False
    (rule,) = bucket["lifecycle_rule"]
    assert rule["action"] == [{"type": "Delete"}] and "days_since_noncurrent_time" in rule["condition"][0]
    assert blocks("output")["storage_root"]["value"] == "gs://${google_storage_bucket.data.name}/runs"


def test_the_node_account_may_touch_the_buckets_objects_and_nothing_else():
    """One grant, on the bucket: no project-wide role for the account the workers and pods run as."""
    resources = blocks("resource")
    account = resources["google_service_account.node"]
    grants = {k: v for k, v in resources.items() if "_iam_" in k}
    assert not any(k.startswith(("google_project_iam", "google_storage_bucket_iam_binding")) for k in grants)
    bucket_grant = grants["google_storage_bucket_iam_member.node_objects"]
    assert bucket_grant == {
        "bucket": "${google_storage_bucket.data.name}",
        "role": "roles/storage.objectAdmin",
        "member": "serviceAccount:${google_service_account.node.email}",
    }
    # the account the cluster definitions name
    gcp = yaml.safe_load((REPO / "cluster" / "gcp.yaml").read_text())
    email = gcp["available_node_types"]["cpu_worker"]["node_config"]["serviceAccounts"][0]["email"]
    assert email.split("@")[0] == account["account_id"] == "crome-ray-node"
    pod_account = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    assert pod_account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == email


def test_workload_identity_is_optional_and_binds_the_kuberay_service_account():
    variables = blocks("variable")
    binding = blocks("resource")["google_service_account_iam_member.kuberay_workload_identity"]
    assert variables["kuberay_service_account"]["default"] == ""
    assert binding["count"] == '${var.kuberay_service_account == "" ? 0 : 1}'
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["service_account_id"] == "${google_service_account.node.name}"
    assert binding["member"] == "serviceAccount:${var.project_id}.svc.id.goog[${var.kuberay_service_account}]"
    # the variable's own check takes the manifests' "<namespace>/<name>"
    (check,) = variables["kuberay_service_account"]["validation"]
    pattern = re.search(r'regex\("(.+?)",', check["condition"]).group(1).encode().decode("unicode_escape")
    account = next(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    namespace = account["metadata"].get("namespace", "default")
    assert re.fullmatch(pattern, f"{namespace}/{account['metadata']['name']}")
    assert not re.fullmatch(pattern, account["metadata"]["name"])


def test_the_budget_alert_is_optional_and_watches_this_project():
    variables = blocks("variable")
    budget = blocks("resource")["google_billing_budget.monthly"]
    assert variables["billing_account"]["default"] == ""
    assert budget["count"] == '${var.billing_account == "" ? 0 : 1}'
    assert budget["budget_filter"][0]["projects"] == ["projects/${data.google_project.this.number}"]
    amount = budget["amount"][0]["specified_amount"][0]
    assert amount["currency_code"] == "USD" and "var.budget_usd" in amount["units"]
    thresholds = [r["threshold_percent"] for r in budget["threshold_rules"]]
    assert thresholds == sorted(thresholds) and thresholds[-1] == 1.0


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_finds_the_module_formatted():
    proc = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", "-no-color", str(TF)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
