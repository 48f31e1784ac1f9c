"""Oracle job configs for tests: a prompts table written where the test says, and the job's config."""

import json
from pathlib import Path

from crome_ray.config import load_config
from crome_ray.oracle.config import OracleJobConfig


def oracle_job(tmp_path: Path, rows: list[dict], *overrides: str, name: str = "prompts") -> OracleJobConfig:
    """``rows`` as ``<tmp_path>/<name>.jsonl``, and a job reading it that writes under ``<tmp_path>/runs``."""
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_config(
        OracleJobConfig, None, [f"input={path}", f"storage.root={tmp_path / 'runs'}", *overrides]
    )
