"""The oracle layer: LLM calls under a cluster-wide quota, a hard dollar cap and a resumable cache."""
