"""The demo (``make demo`` / ``crome-ray demo``): the pipeline on the shipped sample, local defaults.

Its job configs are the shipped ``jobs/configs/demo_*.yaml`` (tested like every shipped
config); this module only wires them to one storage root and runs the oracle step
against the built-in Gemini simulator, so the demo needs no key and spends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from crome_ray.config import ConfigError, IngestConfig, OracleJobConfig, TrainConfig, load_config
from crome_ray.oracle.simulator import SimConfig
from crome_ray.runs import StepResult

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"
# The simulated Gemini: a modest quota, a little latency, and the failures a real run meets
# (5% server errors, 5% answers that are not JSON), so the retries and quarantine show.
DEMO_SIMULATOR = SimConfig(rpm=300, window_s=60, latency_median_s=0.2, p_500=0.05, p_malformed=0.05)


@dataclass(frozen=True)
class DemoConfigs:
    ingest: IngestConfig
    oracle: OracleJobConfig
    train: TrainConfig


# ``--quick``: the same three steps at smoke size (what the test of the demo runs): 8 prompts,
# 4 training steps on one worker at 64 tokens
QUICK = {
    "oracle": ["limit=8"],
    "train": ["max_steps=4", "max_length=64", "log_every=2", "checkpoint_every=2", "eval_limit=40",
              "scaling.workers=1"],
}  # fmt: skip


def demo_configs(output: str, *, quick: bool = False) -> DemoConfigs:
    """The three shipped demo configs, writing under ``output``; step 3 reads step 1's run."""

    def load(cls, name: str, *extra: str):
        path = CONFIGS / f"demo_{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"the demo's config {path} is missing: run the demo from a crome-ray checkout")
        return load_config(cls, path, [f"storage.root={output}", *extra])

    ingest = load(IngestConfig, "ingest")
    q = QUICK if quick else {"oracle": [], "train": []}
    return DemoConfigs(
        ingest=ingest,
        oracle=load(OracleJobConfig, "oracle", *q["oracle"]),
        train=load(TrainConfig, "train", f"train_data={output}/ingest/{ingest.run_name}", *q["train"]),
    )


def run_demo_oracle(cfg: OracleJobConfig, *, force: bool = False) -> StepResult:
    """The oracle step against the simulator, started for it and stopped after it."""
    from crome_ray.oracle.job import run_oracle_job
    from crome_ray.oracle.simulator import RunningSimulator

    with RunningSimulator(DEMO_SIMULATOR) as sim:
        cfg = cfg.model_copy(update={"oracle": cfg.oracle.model_copy(update={"base_url": sim.url})})
        return run_oracle_job(cfg, SecretStr("simulator-has-no-key"), force=force)
