variable "project_id" {
  description = "The Google Cloud project the bucket and the service account live in."
  type        = string
}

variable "region" {
  description = "The provider's default region (cluster/gcp.yaml runs in us-central1)."
  type        = string
  default     = "us-central1"
}

variable "bucket_name" {
  description = "The bucket for run folders (storage.root=gs://<bucket_name>/runs); globally unique."
  type        = string
}

variable "bucket_location" {
  description = "Where the bucket lives: a region (us-central1, next to the cluster) or a multi-region (US)."
  type        = string
  default     = "us-central1"
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object's old version is kept (versioning is on)."
  type        = number
  default     = 30
}

variable "kuberay_service_account" {
  description = <<-EOT
    The Kubernetes ServiceAccount of cluster/kuberay/*.yaml as "<namespace>/<name>" (e.g.
    "default/crome-ray"), allowed to act as crome-ray-node through GKE Workload Identity. Empty:
    no binding (the project has no GKE cluster with Workload Identity yet, or uses none).
  EOT
  type        = string
  default     = ""
  validation {
    condition     = var.kuberay_service_account == "" || can(regex("^[a-z0-9-]+/[a-z0-9-]+$", var.kuberay_service_account))
    error_message = "kuberay_service_account is \"<namespace>/<name>\", e.g. \"default/crome-ray\", or empty."
  }
}

variable "billing_account" {
  description = "The billing account id (XXXXXX-XXXXXX-XXXXXX) for the budget alert. Empty: no budget."
  type        = string
  default     = ""
}

variable "budget_usd" {
  description = "The monthly budget of the project in US dollars; alerts at 50%, 90% and 100% of it."
  type        = number
  default     = 500
}
