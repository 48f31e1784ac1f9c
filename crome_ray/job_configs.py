"""Every job's config class by the name a YAML gives in ``job:``, and the loader of any shipped
job YAML (jobs/configs/*.yaml). The one module that knows all the jobs, so it sits on top.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from crome_ray.augment.config import AugmentConfig
from crome_ray.config import ConfigError, Frozen, load_config
from crome_ray.data.config import IngestConfig
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.oracle.config import OracleJobConfig
from crome_ray.pipeline.config import PipelineConfig
from crome_ray.train.config import TrainConfig
from crome_ray.tune.config import TuneConfig

JOB_CONFIGS: dict[str, type[Frozen]] = {
    "ingest": IngestConfig,
    "oracle": OracleJobConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
    "evaluate": EvaluateConfig,
    "tune": TuneConfig,
    "pipeline": PipelineConfig,
}


def load_job_config(path: str | Path, overrides: list[str] = ()) -> Frozen:
    """Load a shipped job YAML; its ``job:`` key picks the config class."""
    p = Path(path)
    head = yaml.safe_load(p.read_text()) if p.is_file() else None
    job = head.get("job") if isinstance(head, dict) else None
    if job not in JOB_CONFIGS:
        raise ConfigError(
            f"config file {str(p)!r} must name its job as 'job: <name>' with one of: "
            f"{', '.join(JOB_CONFIGS)} (got {job!r})"
        )
    return load_config(JOB_CONFIGS[job], p, overrides)
