"""A reward model trained once per seed: the same committed training run, its seed changed.

Two RMs trained on the same data with different seeds can differ by more than a baseline and a
Crome RM do; the evaluation's ``seeds`` (and the pipeline's) trains each model per seed so the
report can show the between-seed spread next to the between-model difference.

A model's seed siblings are derived from its committed run's manifest: the same training
config with ``seed`` set (and the run named by its fingerprint), so the pipeline and a later
``crome-ray evaluate`` with the same seeds find the same runs, and a sibling already committed
is not trained again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crome_ray.config import StorageConfig
from crome_ray.storage import RunFolder, is_bucket_uri
from crome_ray.train.config import TrainConfig


@dataclass(frozen=True)
class Seeded:
    """One model's runs, one per seed; the model as given first."""

    seeds: tuple[int, ...]
    uris: tuple[str, ...]


def training_config(uri: str, storage: StorageConfig) -> TrainConfig | None:
    """The config of a committed training run at ``uri``; None when ``uri`` is not one (an HF id,
    a model folder, a run of another job)."""
    if not (is_bucket_uri(uri) or Path(uri).is_dir()):
        return None
    run = RunFolder.from_uri(uri, storage)
    if not run.is_committed():
        return None
    manifest = run.manifest()
    if manifest.get("job") != "train":
        return None
    return TrainConfig.model_validate(manifest["config"])


def with_seed(cfg: TrainConfig, seed: int, storage: StorageConfig) -> TrainConfig:
    """The same training with another seed, its run named by its fingerprint (a sweep's trial
    has an explicit name; its sibling does not share it)."""
    return cfg.model_copy(update={"seed": seed, "run_name": None, "storage": storage})


def seed_order(own: int, seeds: Sequence[int]) -> tuple[int, ...]:
    """The model's own seed first, then the other seeds asked for."""
    return (own, *(s for s in dict.fromkeys(seeds) if s != own))


def train_seeds(
    uri: str,
    seeds: Sequence[int],
    storage: StorageConfig,
    log: Callable[[str], None] = print,
) -> Seeded | None:
    """The committed training run at ``uri`` and its siblings at ``seeds`` (trained here unless
    committed already). None when ``uri`` is not a committed training run: it has one seed."""
    from crome_ray.train.job import run_train_job

    cfg = training_config(uri, storage)
    if cfg is None:
        return None
    order = seed_order(cfg.seed, seeds)
    uris = [uri]
    for seed in order[1:]:
        sibling = with_seed(cfg, seed, storage)
        log(f"seed {seed} of {uri.rstrip('/').rsplit('/', 1)[-1]}")
        uris.append(run_train_job(sibling, log=log).run.uri)
    return Seeded(order, tuple(uris))
