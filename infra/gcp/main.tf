# The bucket crome-ray writes to and the service account its nodes use, on Google Cloud: the
# counterpart of infra/aws.yaml.
#   terraform -chdir=infra/gcp init
#   terraform -chdir=infra/gcp apply -var project_id=<project> -var bucket_name=<bucket>
# Nodes started by cluster/gcp.yaml run as crome-ray-node; KubeRay pods
# (cluster/kuberay/*.yaml) act as it through GKE Workload Identity when kuberay_service_account
# is set. No keys are ever made or copied: google-auth finds the account on the metadata server.
# Tested: parsed with python-hcl2 (tests/test_infra_gcp.py) and `terraform fmt -check`; not
# planned or applied (that needs the provider plugin and a project).
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_storage_bucket" "data" {
  name     = var.bucket_name
  location = var.bucket_location
  # runs are results: `terraform destroy` refuses a bucket that still holds any
  force_destroy               = false
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_service_account" "node" {
  account_id   = "crome-ray-node"
  display_name = "crome-ray cluster nodes"
  description  = "Runs crome-ray's Ray workers (cluster/gcp.yaml) and KubeRay pods; reads and writes the run bucket."
}

# Objects of this bucket only (read, write, list, delete), nothing else in the project.
resource "google_storage_bucket_iam_member" "node_objects" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.node.email}"
}

# GKE Workload Identity: the KubeRay ServiceAccount acts as crome-ray-node (its annotation
# iam.gke.io/gcp-service-account names this account). The pool <project>.svc.id.goog exists
# once a GKE cluster with Workload Identity does, hence optional.
resource "google_service_account_iam_member" "kuberay_workload_identity" {
  count              = var.kuberay_service_account == "" ? 0 : 1
  service_account_id = google_service_account.node.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kuberay_service_account}]"
}

# A monthly budget on the project with e-mail alerts to the billing account's admins. Optional:
# it needs a billing account id and the Billing Budget API enabled.
resource "google_billing_budget" "monthly" {
  count           = var.billing_account == "" ? 0 : 1
  billing_account = var.billing_account
  display_name    = "crome-ray monthly"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      currency_code = "USD"
      units         = tostring(var.budget_usd)
    }
  }

  threshold_rules {
    threshold_percent = 0.5
  }
  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }
}
