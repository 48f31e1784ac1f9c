"""Training reads the augmented table as it is, and the tie loss acts on its neutral pairs:
with λ > 0 the loss and the gradients change, and the tie pairs alone pull on the model only
when λ > 0."""

import asyncio
import json
import random

import pyarrow as pa
import pytest
import torch

from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentTasks
from crome_ray.augment.flow import Answer, Other, Settings, augment_example
from crome_ray.oracle.simulated_tasks import task_answer
from crome_ray.records import AUGMENTED_PAIR_SCHEMA
from crome_ray.train.batches import PairEncoder, collate, rewards, rows_of
from crome_ray.train.dataset import COLUMNS
from crome_ray.train.loss import composite_loss
from crome_ray.train.model import load_reward_model


@pytest.fixture(scope="module")
def augmented(samples) -> pa.Table:
    """The augmentation's pairs for three sample examples (the simulator's task answers as the oracle)."""
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    rows = [r for r in rows if len(r["chosen"]) < 1200 and len(r["rejected"]) < 1200][:3]
    rng = random.Random(0)

    async def ask(tasks):
        return {
            t.id: Answer(task_answer(t.task.schema, t.task.prompt, rng), backend="g", model="m")
            for t in tasks
        }

    out = []
    for i, r in enumerate(rows):
        ex = P.Example(str(i), r["prompt"], r["chosen"], r["rejected"])
        other = Other(rows[(i + 1) % 3]["prompt"], rows[(i + 1) % 3]["chosen"], 0.1, "test")
        rec = asyncio.run(
            augment_example(ex, ask, Settings(AugmentTasks(attributes=1, elements=False)), other=other)
        )
        out += [row for table, row in rec.rows if table == "pairs"]
    return pa.Table.from_pylist(out, schema=AUGMENTED_PAIR_SCHEMA)


def grads(model, batch, tie_weight):
    model.zero_grad()
    r_a, r_b = rewards(model, batch)
    loss = composite_loss(r_a, r_b, batch.is_tie, tie_weight=tie_weight)
    loss.total.backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss, g.clone()


def test_the_tie_loss_is_active_on_the_augmented_tables_neutral_pairs(augmented, tiny_llama):
    labels = augmented.column("label").to_pylist()
    assert "tie" in labels and "chosen" in labels
    torch.manual_seed(0)
    rm = load_reward_model(tiny_llama, finetune="full")
    enc = PairEncoder(rm.tokenizer, 64, is_decoder=rm.is_decoder)
    batch_cols = {
        c: augmented.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS
    }  # what training reads
    rows = rows_of(enc.encode_pairs(batch_cols))
    batch = collate(rows, rm.tokenizer.pad_token_id)
    assert int(batch.is_tie.sum()) == labels.count("tie") > 0

    off, g_off = grads(rm.model, batch, 0.0)
    on, g_on = grads(rm.model, batch, 1.0)
    assert on.n_tie == labels.count("tie") and on.tie > 0
    assert on.total.item() > off.total.item()  # the tie term adds to the loss
    assert not torch.allclose(g_on, g_off)  # and to the gradients

    ties = collate([r for r in rows if r.is_tie], rm.tokenizer.pad_token_id)
    _, g_ties_off = grads(rm.model, ties, 0.0)
    _, g_ties_on = grads(rm.model, ties, 1.0)
    assert g_ties_off.abs().max().item() == 0.0  # λ = 0: the neutral pairs teach nothing
    assert g_ties_on.abs().max().item() > 0.0
