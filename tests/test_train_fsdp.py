"""FSDP (sharded) training on CPU: two real gloo processes running the training loop.

Sharded data parallelism computes what replicated (DDP) data parallelism computes, only
with each worker holding part of the weights, gradients and optimizer state. So the
test trains the same tiny Llama on the same rows both ways and asks for the same
weights, the same evaluation and the same export; then it restores a sharded checkpoint.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from crome_ray.train.batches import collate, rewards
from crome_ray.train.loop import STATE_FILE, train_worker
from crome_ray.train.model import load_reward_model
from crome_ray.train.sharding import is_sharded, shard, transformer_blocks
from tests.test_train import config, encoded

pytestmark = pytest.mark.slow  # two processes per case, ~10 s each


@dataclass
class TwoProcessRuntime:
    """A runtime over a real gloo process group: rows split by rank, sums all-reduced."""

    rows: list
    eval: list
    rank: int
    world_size: int
    strategy: str
    restore: str | None = None
    saved: str | None = None
    split: str = "strided"  # or "kinds": rank 0 gets the preference pairs, rank 1 the ties
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    has_eval: bool = True

    def train_rows(self):
        if self.split == "kinds":
            return iter([r for r in self.rows if r.is_tie == (self.rank == 1)])
        return iter(self.rows[self.rank :: self.world_size])

    def eval_rows(self):
        return iter(self.eval[self.rank :: self.world_size])

    def wrap(self, model):
        if self.strategy == "fsdp":
            return shard(model, self.device)
        return torch.nn.parallel.DistributedDataParallel(model)

    def all_sum(self, values):
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def all_gather(self, value):
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, value)
        return out

    def latest_checkpoint(self):
        return self.restore

    def report(self, metrics, checkpoint_dir):
        if checkpoint_dir and self.saved:
            shutil.copytree(checkpoint_dir, self.saved, dirs_exist_ok=True)


def _worker(rank: int, port: int, job: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        with open(job["rows"], "rb") as f:
            rows, eval_rows = pickle.load(f)
        runtime = TwoProcessRuntime(
            rows,
            eval_rows,
            rank,
            2,
            job["strategy"],
            job.get("restore"),
            job.get("saved"),
            job.get("split", "strided"),
        )
        cfg = config(**job["cfg"])
        out: dict = {}

        def export(rm):
            with torch.no_grad():
                r_a, r_b = rewards(rm.model, collate(eval_rows[:4], rm.tokenizer.pad_token_id))
            out["weights"] = {k: v.detach().clone() for k, v in rm.model.state_dict().items()}
            out["rewards"] = torch.cat([r_a, r_b])
            out["plain"] = not is_sharded(rm.model)

        out["metrics"] = train_worker(cfg, job["model"], runtime, job["steps"], export=export)
        if rank == 0:
            torch.save(out, job["out"])
        else:  # what rank 1 reported, for tests that compare the ranks' views
            torch.save(out["metrics"], job["out"] + ".rank1")
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(tmp_path: Path, name: str, **job) -> dict:
    job["out"] = str(tmp_path / f"{name}.pt")
    mp.spawn(_worker, args=(free_port(), job), nprocs=2, join=True)
    return torch.load(job["out"], weights_only=False)


@pytest.fixture(scope="module")
def pair_rows(tiny_llama, samples, tmp_path_factory):
    rows = encoded(tiny_llama, samples, 40, ties=6)
    path = tmp_path_factory.mktemp("fsdp") / "rows.pkl"
    with open(path, "wb") as f:
        # 9 eval rows (3 ties): 5 and 4 per worker, so 2 batches against 1 at batch size 4
        pickle.dump((rows[3:34], rows[:3] + rows[34:]), f)
    return path


@pytest.mark.parametrize(
    ("finetune", "checkpointing"), [("lora", False), ("full", False), ("lora", True)], ids=str
)
def test_sharded_training_computes_what_replicated_training_computes(
    tiny_llama, pair_rows, tmp_path, finetune, checkpointing
):
    cfg = {"finetune": finetune, "grad_accum": 2, "eval_every": 2, "optim.lr": 0.01}
    job = {
        "model": str(tiny_llama),
        "rows": str(pair_rows),
        "steps": 4,
        "cfg": {**cfg, "gradient_checkpointing": checkpointing},
    }
    ddp = run_two(tmp_path, "ddp", strategy="ddp", **job)
    fsdp = run_two(tmp_path, "fsdp", strategy="fsdp", **job)

    assert fsdp["plain"]  # exported from a plain (gathered) copy, loadable anywhere
    assert set(fsdp["weights"]) == set(ddp["weights"])
    for name, w in ddp["weights"].items():
        torch.testing.assert_close(fsdp["weights"][name], w, atol=2e-5, rtol=1e-4, msg=name)
    torch.manual_seed(config().seed)  # the loop's seed: the same initial weights
    initial = load_reward_model(str(tiny_llama), finetune=finetune, lora=config().lora).model.state_dict()
    trained = [n for n, p in initial.items() if not torch.equal(p, fsdp["weights"][n])]
    assert any("score" in n for n in trained)
    assert any(("lora_" if finetune == "lora" else "layers.0.mlp") in n for n in trained)
    torch.testing.assert_close(fsdp["rewards"], ddp["rewards"], atol=1e-4, rtol=1e-4)
    for key in ("eval_pairs", "eval_ties", "eval_accuracy", "eval_loss_bt", "loss"):
        assert fsdp["metrics"][key] == pytest.approx(ddp["metrics"][key], rel=1e-4, abs=1e-5), key
    assert fsdp["metrics"]["eval_pairs"] + fsdp["metrics"]["eval_ties"] == 9  # each eval row once


def test_a_sharded_checkpoint_restores_the_weights_and_refuses_a_ddp_checkpoint(
    tiny_llama, pair_rows, tmp_path
):
    job = {"model": str(tiny_llama), "rows": str(pair_rows), "cfg": {"finetune": "full", "optim.lr": 0.01}}
    first = run_two(tmp_path, "first", strategy="fsdp", steps=3, saved=str(tmp_path / "ckpt"), **job)
    assert (tmp_path / "ckpt" / STATE_FILE).exists()
    state = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=False)
    assert state["step"] == 3 and state["strategy"] == "fsdp"

    # nothing left to train: what is exported is exactly what was restored
    again = run_two(tmp_path, "again", strategy="fsdp", steps=3, restore=str(tmp_path / "ckpt"), **job)
    for name, w in first["weights"].items():
        torch.testing.assert_close(again["weights"][name], w, msg=name)

    with pytest.raises(Exception, match="written by a fsdp run"):
        run_two(tmp_path, "mixed", strategy="ddp", steps=4, restore=str(tmp_path / "ckpt"), **job)


def test_the_blocks_sharded_are_the_transformer_layers(tiny_llama, minilm_path):
    llama = load_reward_model(str(tiny_llama), finetune="full").model
    assert transformer_blocks(llama) == list(llama.model.layers)
    bert = load_reward_model(str(minilm_path), finetune="lora").model
    blocks = transformer_blocks(bert)
    assert len(blocks) == 6 and all(type(b).__name__ == "BertLayer" for b in blocks)


def test_every_metric_is_reduced_over_all_workers_even_when_one_worker_holds_all_the_ties(
    tiny_llama, pair_rows, tmp_path
):
    """Rank 0 trains on preference pairs only, rank 1 on ties only, one batch each. The
    window's loss is the mean of the two batch losses: BT on rank 0's, λ × tie on rank 1's."""
    job = {"model": str(tiny_llama), "rows": str(pair_rows), "steps": 1, "split": "kinds"}
    out = run_two(tmp_path, "kinds", strategy="ddp", cfg={"loss.tie_weight": 0.5}, **job)
    m, rank1 = out["metrics"], torch.load(str(tmp_path / "kinds.pt") + ".rank1", weights_only=False)
    for key in ("loss", "loss_bt", "loss_tie", "pair_accuracy", "tie_abs_delta"):
        assert key in m and m[key] == pytest.approx(rank1[key], rel=1e-9), key  # one view on every rank
    assert m["loss_tie"] >= 0.6931  # −½[log σ(Δ) + log σ(−Δ)] ≥ log 2, whatever Δ is
    assert m["loss_bt"] > 0 and m["tie_abs_delta"] > 0
    assert m["loss"] == pytest.approx((m["loss_bt"] + 0.5 * m["loss_tie"]) / 2, rel=1e-6)
