output "storage_root" {
  description = "Use as storage.root."
  value       = "gs://${google_storage_bucket.data.name}/runs"
}

output "bucket_name" {
  value = google_storage_bucket.data.name
}

output "node_service_account" {
  description = "The email of cluster/gcp.yaml's serviceAccounts and of the KubeRay ServiceAccount's annotation."
  value       = google_service_account.node.email
}
