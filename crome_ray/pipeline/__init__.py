"""The pipeline: its config (``config``), the job that runs every step (``job``) and the demo (``demo``)."""
