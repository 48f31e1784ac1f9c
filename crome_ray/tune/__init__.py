"""The λ sweep: its config (``config``) and the Ray Tune job (``job``)."""
