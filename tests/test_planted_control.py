"""The mechanism the self-check's positive control tests, in one process (no Ray): trained on
pairs with a planted attribute on half their chosen answers and the control's exact ties (each
planted answer with and without it, a tie), the tie loss (λ = 10) keeps the reward model from
rewarding the attribute, and the same training with the tie loss off (λ = 0) learns it.

Measured the way the sweep's robustness probe measures it (``loop.evaluate`` with
``TrainConfig.probe``): the reward the attribute adds to the rejected answers of clean held-out
pairs, in units of the clean answers' reward spread. The data is the product's own: the ingest
of the shipped sample and ``plant.plant_attribute``; the encoding is the training's
(``dataset.encode_batch``, with the probe's cue variants); the loop is ``train_worker``.

Measured 2026-12-05 (2-core Intel Xeon, a 2-layer random BERT, 150 steps of 8 pairs, 64 tokens;
about 30 s for the ten trainings): the shift at λ = 0 was 1.6 to 19 spreads (every seed of five
processes over 1.0), at λ = 10 0.79 to 1.44, lower at every seed; the median share removed per
process 0.53, 0.59, 0.46, 0.60, 0.46. The numbers move from process to process because the test's
WordPiece vocabulary does (the tokenizers trainer breaks frequency ties differently each time),
hence five seeds and a median, and a bound (0.3) below the self-check's 40%.

Seen failing: with ``composite_loss``'s tie term multiplied by 0 (the tie loss switched off in
the trainer, whatever λ says) the two trainings are the same at every seed.

This is the fast guard of what `crome-ray selfcheck` shows end to end through Ray
(tests/test_selfcheck_ray.py and tests/test_tune_robust.py, `make test-long`)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from crome_ray.config import StorageConfig, load_config
from crome_ray.cue import DEFAULT_CUE, plant_cue
from crome_ray.data.config import IngestConfig, SourceConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.data.plant import plant_attribute
from crome_ray.records import PreferencePair
from crome_ray.train.batches import rows_of
from crome_ray.train.config import TrainConfig
from crome_ray.train.dataset import encode_batch
from crome_ray.train.loop import LocalRuntime, train_worker

pytestmark = pytest.mark.slow  # ten trainings of a tiny model, about 25 s in all


def pairs_of(uri: str, storage: StorageConfig) -> list[PreferencePair]:
    from crome_ray.storage import RunFolder

    return [
        PreferencePair.from_row(r) for r in RunFolder.from_uri(uri, storage).read_table("pairs").to_pylist()
    ]


def batch_of(pairs: list[PreferencePair]) -> dict[str, np.ndarray]:
    def col(values):
        return np.array(values, dtype=object)

    return {"prompt": col([p.prompt for p in pairs]), "chosen": col([p.chosen for p in pairs]),
            "rejected": col([p.rejected for p in pairs]), "label": col([p.label for p in pairs]),
            "pair_id": col([p.pair_id for p in pairs])}  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory, samples, tiny_bert) -> dict:
    tmp = tmp_path_factory.mktemp("control")
    storage = StorageConfig(root=str(tmp / "runs"))

    def ingest(name: str, limit: int) -> list[PreferencePair]:
        source = SourceConfig(path=str(samples / "ultrafeedback" / name), format="auto", limit=limit)
        return pairs_of(run_ingest(IngestConfig(source=source, storage=storage)).run.uri, storage)

    planting = plant_attribute(ingest("train_1k.jsonl", 160), DEFAULT_CUE, share=0.5, position="start")
    train = planting.pairs + planting.control_ties
    random.Random(0).shuffle(train)  # the order a global shuffle gives, not the planting's
    held_out = [p for p in ingest("eval_200.jsonl", 60) if p.label == "chosen"]
    args = (str(tiny_bert), storage.model_dump_json(), 64)
    return {
        "train": rows_of(encode_batch(batch_of(train), *args)),
        "eval": rows_of(encode_batch(batch_of(held_out), *args, cue=DEFAULT_CUE, position="start")),
        "planted": planting.planted,
        "ties": planting.control_ties,
        "model": str(tiny_bert),
    }


def shift_after_training(planted: dict, tie_weight: float, seed: int) -> dict:
    torch.set_num_threads(2)
    cfg = load_config(
        TrainConfig,
        None,
        ["finetune=full", "max_length=64", "batch_size=8", "optim.lr=3e-3", "log_every=150", "eval_every=150",
         "checkpoint_every=100000", f"loss.tie_weight={tie_weight}", f"seed={seed}",
         f"probe.cue={DEFAULT_CUE}", "probe.position=start"],
    )  # fmt: skip
    runtime = LocalRuntime(planted["train"], planted["eval"])
    return train_worker(cfg, planted["model"], runtime, 150)


def test_the_control_data_is_the_planted_pairs_and_their_exact_ties(planted):
    ties = planted["ties"]
    assert 60 <= planted["planted"] <= 100 and len(ties) == planted["planted"]
    # each tie: one answer with the attribute and the same answer without it, nothing else
    assert all(t.label == "tie" for t in ties)
    assert all({t.chosen, t.rejected} == {plant_cue(t.rejected, DEFAULT_CUE, "start"), t.rejected}
               or {t.chosen, t.rejected} == {plant_cue(t.chosen, DEFAULT_CUE, "start"), t.chosen}
               for t in ties)  # fmt: skip
    assert all(t.chosen != t.rejected for t in ties)
    variants = [r.variant for r in planted["eval"]]
    assert variants.count(0) == variants.count(1) > 40  # each held-out pair, and again with the cue


SEEDS = (0, 1, 2, 3, 4)


def test_the_tie_loss_on_the_exact_ties_removes_most_of_the_attributes_reward(planted):
    """Each seed trains both ways; the tie loss lowers the shift at every seed, and the median share
    of the shift it removes is a large part of it."""
    removed = []
    for seed in SEEDS:
        off = shift_after_training(planted, 0.0, seed)
        on = shift_after_training(planted, 10.0, seed)
        assert off["eval_cue_shift"] > 1.0, (seed, off)  # without the tie loss the model rewards it
        assert on["eval_cue_abs_shift"] < off["eval_cue_abs_shift"], (seed, on, off)
        removed.append(1 - on["eval_cue_abs_shift"] / off["eval_cue_abs_shift"])
    assert float(np.median(removed)) > 0.3, removed
