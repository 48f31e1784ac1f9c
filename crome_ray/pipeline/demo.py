"""The demo (``make demo`` / ``crome-ray demo``): the pipeline on the shipped sample, embedded defaults.

Its config is the shipped ``jobs/configs/pipeline_demo.yaml`` (tested like every shipped
config); this module only points it at a storage root and, for ``--quick``, shrinks it to
smoke size. With no Gemini key the oracle is the built-in local model on vLLM, which the
CLI says in one line; with ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` set it is Gemini, under
the config's dollar cap.
"""

from __future__ import annotations

from pathlib import Path

from crome_ray.config import ConfigError, load_config
from crome_ray.pipeline.config import PipelineConfig

CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "pipeline_demo.yaml"
# the demo's local Ray cluster has the 2 CPUs its config's stages are sized for, whatever the
# machine has: it runs the same on a laptop, a workstation and CI's 2 cores
RAY_CPUS = 2

# ``--quick``: the same pipeline at smoke size (what the test of the demo runs): 40 pairs, IQN
# ties only (no oracle call, so no engine starts), 4 training steps on one worker and no
# validation set, 4 pairs of each evaluation set
QUICK = [
    "source.limit=40",
    "augment.oracle_examples=0",
    "evaluate.limit=4",
    "evaluate.best_of_n.limit=4",
    *(f"{rm}.{k}" for rm in ("baseline", "crome")
      for k in ("max_steps=4", "max_length=64", "log_every=2", "checkpoint_every=2", "eval_data=null",
                "scaling.workers=1")),
]  # fmt: skip


def demo_config(output: str, *, quick: bool = False) -> PipelineConfig:
    """The shipped demo pipeline, writing under ``output``."""
    if not CONFIG.is_file():
        raise ConfigError(f"the demo's config {CONFIG} is missing: run the demo from a crome-ray checkout")
    return load_config(PipelineConfig, CONFIG, [f"storage.root={output}", *(QUICK if quick else [])])
