"""The training loop itself: one worker's view, the same with or without Ray.

``train_worker`` runs on each Ray Train worker (through ``crome_ray.train.job``) and,
with a ``LocalRuntime``, in one plain process (the benchmark's baseline): same model,
same batches, same optimizer. What differs between the two is only the ``Runtime``: where
the token rows come from, how metrics and checkpoints are reported, and whether the
model is wrapped for data parallelism.

A checkpoint holds the trainable weights (the LoRA adapter and the score head, or all
weights when fully fine-tuning), the optimizer, the scheduler, the step and every worker's
random state (dropout). On a restart the loop loads the latest one and goes on from its
step where the data left off: the batches the steps before it trained on are drawn again, in
the same order, and dropped. With the same number of workers the run then goes on as if it
had not stopped (tests/test_train.py compares it with a run that did not stop; across nodes,
tests/test_multinode.py compares the steps trained again with the first time they were trained);
with fewer, each worker's share of the data is another.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from crome_ray.train.batches import PairBatch, PairRow, collate, length_grouped, rewards
from crome_ray.train.config import TrainConfig
from crome_ray.train.loss import composite_loss
from crome_ray.train.model import RewardModel, load_reward_model
from crome_ray.train.sharding import gathered_optimizer, gathered_weights, is_sharded, load_gathered

STATE_FILE = "train_state.pt"


class Runtime(Protocol):
    rank: int
    world_size: int
    device: torch.device
    has_eval: bool

    def train_rows(self) -> Iterator[PairRow]: ...  # one pass over this worker's share

    def eval_rows(self) -> Iterator[PairRow] | None: ...

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def all_sum(self, values: list[float]) -> list[float]: ...

    def all_gather(self, value: Any) -> list[Any]: ...  # every rank's value, in rank order

    def latest_checkpoint(self) -> str | None: ...  # a local folder, or None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...


@dataclass
class LocalRuntime:
    """One process, no Ray: rows from memory, metrics into a list; with ``checkpoints`` (a
    folder), each reported checkpoint is kept there and a later run starts from the latest."""

    rows: list[PairRow]
    eval: list[PairRow] | None = None
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reports: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: str | None = None

    @property
    def has_eval(self) -> bool:
        return bool(self.eval)

    def train_rows(self) -> Iterator[PairRow]:
        return iter(self.rows)

    def eval_rows(self) -> Iterator[PairRow] | None:
        return iter(self.eval) if self.eval else None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_sum(self, values: list[float]) -> list[float]:
        return values

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def latest_checkpoint(self) -> str | None:
        if self.checkpoints is None or not os.path.isdir(self.checkpoints):
            return None
        kept = sorted(os.listdir(self.checkpoints))
        return os.path.join(self.checkpoints, kept[-1]) if kept else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None and self.checkpoints is not None:
            shutil.copytree(checkpoint_dir, os.path.join(self.checkpoints, f"{int(metrics['step']):09d}"))


def steps_for(cfg: TrainConfig, pairs: int, world_size: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_worker = math.ceil(pairs / world_size)
    per_step = cfg.batch_size * cfg.grad_accum
    return max(1, math.ceil(cfg.epochs * math.ceil(per_worker / per_step)))


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _batches(runtime: Runtime, cfg: TrainConfig, rng: random.Random) -> Iterator[list[PairRow]]:
    """Length-grouped batches forever, one pass over the worker's share after another."""
    while True:
        produced = 0
        for batch in length_grouped(runtime.train_rows(), cfg.batch_size, rng=rng):
            produced += 1
            yield batch
        if not produced:
            raise RuntimeError("this worker's share of the training data is empty")


@dataclass
class _Window:
    """What this worker's steps since the last report add up to (summed over micro-batches).

    Every field is a sum, so the window of the whole run is the all-reduced sum of every
    worker's window: each metric is then reduced over all workers the same way."""

    batches: int = 0
    loss: float = 0.0  # Σ over batches of the batch loss (what backward ran on)
    bt: float = 0.0  # Σ over preference pairs of their BT loss
    tie: float = 0.0  # Σ over tie pairs of their tie loss
    tokens: int = 0
    pref: int = 0
    correct: int = 0
    ties: int = 0
    tie_abs: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    FIELDS = ("batches", "loss", "bt", "tie", "tokens", "pref", "correct", "ties", "tie_abs")

    def add(self, parts, tokens: int) -> None:
        self.batches += 1
        self.loss += float(parts.total.detach())
        self.bt += float(parts.bt) * parts.n_pref
        self.tie += float(parts.tie) * parts.n_tie
        self.tokens += tokens
        self.pref += parts.n_pref
        self.correct += parts.correct
        self.ties += parts.n_tie
        self.tie_abs += parts.tie_abs_delta_sum

    def metrics(self, runtime: Runtime) -> dict[str, float]:
        """The window's metrics over all workers (a collective: every worker calls it)."""
        elapsed = time.perf_counter() - self.started
        s = dict(
            zip(self.FIELDS, runtime.all_sum([float(getattr(self, f)) for f in self.FIELDS]), strict=True)
        )
        out = {
            "tokens_per_s": s["tokens"] / elapsed if elapsed > 0 else 0.0,
            "loss": s["loss"] / (s["batches"] or 1),
            "loss_bt": s["bt"] / (s["pref"] or 1),
            "loss_tie": s["tie"] / (s["ties"] or 1),
        }
        if s["pref"]:
            out["pair_accuracy"] = s["correct"] / s["pref"]
        if s["ties"]:
            out["tie_abs_delta"] = s["tie_abs"] / s["ties"]
        return out


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    inner = getattr(model, "module", model)
    names = {n for n, p in inner.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items() if k in names}


def _equal_forward_counts(chunks: list[list[PairRow]], runtime: Runtime, pad_id: int) -> int:
    """FSDP: pad this worker's eval batches to the largest count among workers (each forward
    is a collective). Returns how many real batches come first."""
    mine = [float(len(chunks)) if r == runtime.rank else 0.0 for r in range(runtime.world_size)]
    counts = runtime.all_sum(mine)
    real = len(chunks)
    spare = [PairRow(np.array([pad_id]), np.array([pad_id]), False, 2)]
    chunks.extend([chunks[0] if chunks else spare] * (int(max(counts)) - real))
    return real


def evaluate(model, runtime: Runtime, cfg: TrainConfig, pad_id: int, dtype) -> dict[str, float]:
    """The validation metrics; with the robustness probe (``cfg.probe``), also
    ``eval_cue_accuracy``, ``eval_cue_shift`` and its size ``eval_cue_abs_shift`` from the rows
    with the cue on the rejected answer."""
    rows = list(runtime.eval_rows() or ())
    clean = [r for r in rows if r.variant == 0]
    cued = [r for r in rows if r.variant != 0]
    # 0 bt sum, 1 n_pref, 2 correct, 3 tie sum, 4 n_tie, 5 tie |Δ| sum, 6 Σ r(rejected), 7 Σ r,
    # 8 Σ r² (both answers of the clean preference pairs), 9 n cued, 10 correct cued, 11 Σ r(rejected + cue)
    sums = [0.0] * 12
    chunks = list(_chunks(iter(clean), cfg.batch_size))
    n_clean = len(chunks)
    chunks += list(_chunks(iter(cued), cfg.batch_size))
    real = _equal_forward_counts(chunks, runtime, pad_id) if is_sharded(model) else len(chunks)
    model.eval()
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            batch = collate(chunk, pad_id).to(runtime.device)
            with _autocast(runtime.device, dtype):
                r_a, r_b = rewards(model, batch)
            if i >= real:
                continue  # a padding batch: its forward pass only keeps the workers in step
            pref = ~batch.is_tie
            a, b = r_a[pref].float(), r_b[pref].float()
            if i >= n_clean:  # the probe's rows: every one a preference pair with the cue on B
                sums[9] += int(pref.sum())
                sums[10] += int((a > b).sum())
                sums[11] += float(b.sum())
                continue
            parts = composite_loss(r_a, r_b, batch.is_tie, cfg.loss.tie_weight, cfg.loss.margin)
            sums[0] += float(parts.bt) * parts.n_pref
            sums[1] += parts.n_pref
            sums[2] += parts.correct
            sums[3] += float(parts.tie) * parts.n_tie
            sums[4] += parts.n_tie
            sums[5] += parts.tie_abs_delta_sum
            sums[6] += float(b.sum())
            sums[7] += float(a.sum() + b.sum())
            sums[8] += float((a * a).sum() + (b * b).sum())
    model.train()
    bt, n_pref, correct, tie, n_tie, tie_abs, rb, r1, r2, n_cue, cue_correct, rb_cue = runtime.all_sum(sums)
    out: dict[str, float] = {}
    if n_pref:
        out.update(eval_accuracy=correct / n_pref, eval_loss_bt=bt / n_pref, eval_pairs=n_pref)
    if n_tie:
        out.update(eval_loss_tie=tie / n_tie, eval_tie_abs_delta=tie_abs / n_tie, eval_ties=n_tie)
    if n_cue and n_pref:
        shift = cue_shift(rb, r1, r2, n_pref, rb_cue, n_cue)
        out.update(eval_cue_accuracy=cue_correct / n_cue, eval_cue_shift=shift, eval_cue_abs_shift=abs(shift))
    return out


def cue_shift(rb: float, r1: float, r2: float, n_pref: float, rb_cue: float, n_cue: float) -> float:
    """The reward the cue adds to a rejected answer, on average, in units of the spread (standard
    deviation) of the clean answers' rewards: from sums, so that workers add theirs up. The cued
    rows are the clean preference pairs again, so the difference of means is the mean shift.
    NaN when the clean rewards do not vary at all: a model that scores every answer alike has no
    spread to measure in, and must not look like one the cue does not move (a sweep minimising
    the shift would pick it)."""
    m = 2 * n_pref
    spread = math.sqrt(max(r2 / m - (r1 / m) ** 2, 0.0))
    shift = rb_cue / n_cue - rb / n_pref
    return shift / spread if spread > 0 else math.nan


def _chunks(rows: Iterator[PairRow], size: int) -> Iterator[list[PairRow]]:
    chunk: list[PairRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random state: torch's CPU generator, and the GPU's when training on one."""
    cuda = torch.cuda.get_rng_state() if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_worker(
    cfg: TrainConfig,
    model_path: str,
    runtime: Runtime,
    total_steps: int,
    export: Callable[[RewardModel], None] | None = None,
) -> dict[str, Any]:
    """Train for ``total_steps`` optimizer steps; returns the last metrics."""
    from transformers import get_scheduler

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed * 1000 + runtime.rank)
    device = runtime.device
    dtype = autocast_dtype(cfg, device)
    rm = load_reward_model(
        model_path,
        finetune=cfg.finetune,
        lora=cfg.lora,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    pad_id = rm.tokenizer.pad_token_id
    model = runtime.wrap(rm.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    warmup = int(cfg.optim.warmup_ratio * total_steps)
    name = "constant_with_warmup" if cfg.optim.schedule == "constant" else cfg.optim.schedule
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)

    sharded = is_sharded(model)
    strategy = "fsdp" if sharded else "ddp"
    step, started_at = 0, 0
    found = runtime.latest_checkpoint()
    if found:
        state = torch.load(Path(found) / STATE_FILE, map_location="cpu", weights_only=False)
        if state.get("strategy", "ddp") != strategy:
            raise RuntimeError(
                f"checkpoint {found} was written by a {state.get('strategy', 'ddp')} run; this run "
                f"uses {strategy}: start a new run (another run_name) or keep the strategy"
            )
        if sharded:
            load_gathered(model, optimizer, state["weights"], state["optimizer"])
        else:
            inner = getattr(model, "module", model)
            missing = inner.load_state_dict(state["weights"], strict=False)
            if missing.unexpected_keys:
                unexpected = missing.unexpected_keys[:3]
                raise RuntimeError(f"checkpoint {found} does not fit this model: {unexpected}")
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = started_at = int(state["step"])
        rng_states = state.get("rng") or []
        if len(rng_states) == runtime.world_size:  # the same workers: each takes up its own stream
            set_rng_state(rng_states[runtime.rank])

    model.train()
    batches = _batches(runtime, cfg, rng)
    # a resumed run takes up the data where the checkpoint left it: the batches the steps before
    # it trained on are drawn again and dropped (the same order, the same length grouping), so
    # the run goes on as if it had not stopped (reading, not training: cheap next to a step)
    for _ in range(started_at * cfg.grad_accum):
        next(batches)
    window = _Window()
    last: dict[str, Any] = {"step": step, "started_at_step": started_at}
    is_ddp = hasattr(model, "no_sync")
    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum):
            batch: PairBatch = collate(next(batches), pad_id).to(device)
            sync = micro == cfg.grad_accum - 1
            if sharded:
                model.set_requires_gradient_sync(sync)
            with model.no_sync() if is_ddp and not sync else contextlib.nullcontext():
                with _autocast(device, dtype):
                    r_a, r_b = rewards(model, batch)
                parts = composite_loss(
                    r_a, r_b, batch.is_tie, cfg.loss.tie_weight, cfg.loss.margin, cfg.loss.center_coefficient
                )
                (parts.total / cfg.grad_accum).backward()
            window.add(parts, batch.tokens)
        if cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1

        due_log = step % cfg.log_every == 0 or step == total_steps
        due_ckpt = step % cfg.checkpoint_every == 0 or step == total_steps
        due_eval = (cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps
        if not (due_log or due_ckpt or due_eval):
            continue
        metrics: dict[str, Any] = {
            "step": step,
            "started_at_step": started_at,
            "lr": scheduler.get_last_lr()[0],
            **window.metrics(runtime),
        }
        if due_eval and runtime.has_eval:
            metrics.update(evaluate(model, runtime, cfg, pad_id, dtype))
        window = _Window()
        # every worker's random stream (dropout) into the checkpoint: a collective, so every rank
        rng_states = runtime.all_gather(rng_state(device)) if due_ckpt else None
        with tempfile.TemporaryDirectory(prefix="crome-ckpt-") as tmp:
            ckpt_dir = None
            if due_ckpt and sharded:  # gathered by every worker, written by rank 0
                weights, optim_state = (
                    gathered_weights(model, trainable_only=True),
                    gathered_optimizer(model, optimizer),
                )
            elif due_ckpt and runtime.rank == 0:
                weights, optim_state = trainable_state(model), optimizer.state_dict()
            if due_ckpt and runtime.rank == 0:
                state = {
                    "weights": weights,
                    "optimizer": optim_state,
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "strategy": strategy,
                    "rng": rng_states,
                }
                torch.save(state, os.path.join(tmp, STATE_FILE))
                ckpt_dir = tmp
            runtime.report(metrics, ckpt_dir)
        last = metrics
    if export is not None and sharded:  # gathered whole into a plain copy of the model, on rank 0
        weights = gathered_weights(model, trainable_only=False)
        if runtime.rank == 0:
            plain = load_reward_model(model_path, finetune=cfg.finetune, lora=cfg.lora)
            plain.model.load_state_dict(weights)
            plain.model.eval()
            export(plain)
    elif runtime.rank == 0 and export is not None:  # after the last checkpoint: export may merge in place
        model.eval()
        export(RewardModel(getattr(model, "module", model), rm.tokenizer, rm.is_decoder, rm.lora))
    return last
