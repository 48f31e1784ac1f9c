"""The self-check's planting step: a committed run of the planted pairs (``data.plant``).

`PlantConfig` → ``<root>/plant/<run>/`` with ``pairs``: the input's pairs with the attribute on
the chosen answer of a share of them, and, for the positive control (``control``), each planted
answer with and without it as a tie. Runs in one process, like the ingest: a self-check's data
fits in memory (the shipped sample's 1,000 pairs plant in well under a second), and the
expensive stages after it read the Parquet with Ray Data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from crome_ray.data.config import PlantConfig
from crome_ray.data.inputs import pairs_run
from crome_ray.data.plant import plant_attribute
from crome_ray.errors import CromeError
from crome_ray.records import PAIR_SCHEMA, PAIRS_SCHEMA_VERSION, PreferencePair
from crome_ray.runs import Step, StepResult

JOB = "plant"


class PlantError(CromeError, ValueError):
    """Nothing to plant: the input holds no preference pairs."""


def run_name(cfg: PlantConfig) -> str:
    return cfg.run_name or f"planted-{cfg.fingerprint()}"


def run_plant_job(cfg: PlantConfig, *, log: Callable[[str], None] = print) -> StepResult:
    source = pairs_run(cfg.input, cfg.storage, None, log)
    step = Step(JOB, run_name(cfg), cfg, inputs={"pairs": source})
    if not step.begin():
        return step.result  # type: ignore[return-value]
    pairs = [PreferencePair.from_row(r) for r in source.read_table("pairs").to_pylist()]
    planted = plant_attribute(pairs, cfg.attribute, share=cfg.share, position=cfg.position, seed=cfg.seed)
    if planted.planted == 0:
        raise PlantError(
            f"no pair of {source.uri} got the attribute ({len(pairs)} pairs, "
            f"{sum(p.label == 'chosen' for p in pairs)} of them preference pairs; share {cfg.share})"
        )
    rows = planted.pairs + (planted.control_ties if cfg.control else [])
    table = step.table("pairs", PAIR_SCHEMA, cfg.rows_per_file)
    for pair in rows:
        table.add(pair.to_row())
    kinds = Counter(p.kind for p in rows)
    counts = {
        "pairs_in": len(pairs),
        "planted": planted.planted,
        "pairs_written": len(rows),
        "kinds": dict(kinds),
    }
    return step.commit(counts, schema_version={"pairs": PAIRS_SCHEMA_VERSION})
