"""Reward-model training throughput: crome-ray's loop vs TRL's RewardTrainer, same model, data and steps.

Run as:
    .venv/bin/pip install -e ".[bench]"                         # trl, datasets, accelerate
    .venv/bin/python bench/train_vs_trl.py                       # CPU: MiniLM, full fine-tuning
    .venv/bin/python bench/train_vs_trl.py --model dummy-llama-1b --finetune full \\
        --batch-size 16 --max-length 1024 --steps 30             # GPU: a ~1.1B decoder in bf16

Three sides, each in a process of its own, on the same token ids (UltraFeedback sample
pairs encoded once by crome-ray's encoder: chat template, truncation), the same base
weights, the same optimizer (AdamW, same lr, no warm-up, constant schedule, gradient
norm clipped at 1.0, no weight decay), the same pairs per step and the same number of
steps, on one device, with no Ray (this compares the training loops themselves):

- ``crome-ray``: ``train_worker`` with a ``LocalRuntime``;
- ``trl``: ``trl.RewardTrainer`` set to do the same work as crome-ray: the same
  gradient checkpointing (off unless ``--gradient-checkpointing on``), the model's own
  dropout kept (``disable_dropout=False``), batches grouped by length
  (``train_sampling_strategy="group_by_length"`` on the same length per pair), padding
  to a multiple of 8, the same precision. The ratio is against this side;
- ``trl-defaults``: ``RewardTrainer`` at its own defaults (gradient checkpointing on,
  dropout off, random batches, padding to the longest), with only the work fixed:
  lr, steps, batch, precision. What a user gets out of the box, for context.

Every side reports the settings it actually ran with, read back from the objects
(gradient checkpointing from the model, active dropout modules, the sampler, the
precision) and its padding efficiency (real tokens over padded slots, counted by a
hook on the model's forward), so any difference left shows in the JSON line.

Throughput is real (non-pad) tokens per second over the steps after the warm-up
(the first log window). On a GPU, MFU is model FLOPs per second (6 × non-embedding
parameters per token for full fine-tuning, 4 × for LoRA, where the frozen weights get
no weight gradient) over the GPU's dense bf16 peak. ``dummy-llama-1b`` is a randomly
initialised Llama (TinyLlama's shape, 1.1B parameters) with SmolLM2's tokenizer:
throughput does not depend on the weights.

Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from sides import run_side  # noqa: E402

PASSED_ON = (
    "model",
    "finetune",
    "max_length",
    "batch_size",
    "steps",
    "log_every",
    "pairs",
    "lr",
    "threads",
    "gradient_checkpointing",
)
SIDES = ("crome-ray", "trl", "trl-defaults")
PAD_MULTIPLE = 8  # crome-ray's collate pads to a multiple of 8
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense, per GPU


def make_dummy_llama(out: Path) -> Path:
    from crome_ray.models import random_llama

    # TinyLlama's shape: 1.1B parameters
    shape = {"hidden": 2048, "intermediate": 5632, "layers": 22, "heads": 32, "kv_heads": 4}
    return random_llama(out, **shape, dtype="bfloat16")


def model_path(name: str, work: Path) -> str:
    from crome_ray.models import resolve_model

    if name == "dummy-llama-1b":
        out = work / "dummy-llama-1b"
        return str(out if (out / "config.json").exists() else make_dummy_llama(out))
    return str(resolve_model(name))


def encoded_rows(path: str, args) -> list:
    import numpy as np

    from crome_ray.config import StorageConfig
    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK
    from crome_ray.train.batches import rows_of
    from crome_ray.train.dataset import Encode

    with open(REPO / SAMPLE_ULTRAFEEDBACK) as f:
        raw = [json.loads(line) for line in f][: args.pairs]
    batch = {
        "prompt": np.array([r["prompt"] for r in raw], dtype=object),
        "chosen": np.array([r["chosen"] for r in raw], dtype=object),
        "rejected": np.array([r["rejected"] for r in raw], dtype=object),
        "label": np.array(["chosen"] * len(raw), dtype=object),
        "pair_id": np.array([f"{i:08x}" for i in range(len(raw))], dtype=object),
    }
    return rows_of(Encode(path, StorageConfig().model_dump_json(), args.max_length)(batch))


def flops_per_token(path: str, finetune: str) -> float:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    if not hasattr(c, "num_hidden_layers") or not hasattr(c, "intermediate_size"):
        return 0.0
    h, layers, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    kv = getattr(c, "num_key_value_heads", c.num_attention_heads) * (h // c.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + h * inter * (3 if "llama" in c.model_type else 2)
    n = layers * per_layer
    return (6 if finetune == "full" else 4) * n


class Meter:
    """Counts what the model's forward sees: real tokens and padded slots (the same hook on every side)."""

    def __init__(self):
        self.real = self.slots = 0

    def attach(self, model) -> None:
        def hook(_module, fargs, kwargs):
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2:
                self.real += int(mask.sum())
                self.slots += mask.numel()

        model.register_forward_pre_hook(hook, with_kwargs=True)

    def padding_efficiency(self) -> float:
        return round(self.real / self.slots, 4) if self.slots else 0.0


def effective(model, meter: Meter, **known) -> dict:
    """The settings a side actually ran with, read from its model where the model holds them."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)
    drop = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    return {
        "gradient_checkpointing": bool(getattr(base, "is_gradient_checkpointing", False)),
        "dropout_modules_active": len(drop),
        "padding_efficiency": meter.padding_efficiency(),
        **known,
    }


def side_crome(args, path: str, rows: list) -> dict:
    import torch

    from crome_ray.config import load_config
    from crome_ray.train.config import TrainConfig
    from crome_ray.train.loop import LocalRuntime, autocast_dtype, train_worker

    cfg = load_config(
        TrainConfig,
        None,
        [
            f"finetune={args.finetune}",
            f"max_length={args.max_length}",
            f"batch_size={args.batch_size}",
            f"log_every={args.log_every}",
            "checkpoint_every=1000000",
            "eval_data=null",
            f"optim.lr={args.lr}",
            "optim.warmup_ratio=0",
            "optim.schedule=constant",
            f"gradient_checkpointing={args.gradient_checkpointing == 'on'}",
        ],
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meter, seen = Meter(), []

    class Measured(LocalRuntime):
        def wrap(self, model):
            meter.attach(model)
            seen.append(model)
            return super().wrap(model)

    runtime = Measured(rows, device=device)
    train_worker(cfg, path, runtime, total_steps=args.steps)
    windows = [r["tokens_per_s"] for r in runtime.reports]
    steady = windows[1:] or windows
    dtype = autocast_dtype(cfg, device)
    settings = effective(
        seen[0],
        meter,
        order="length-grouped (sorted in buffers of 32 batches, batches shuffled)",
        pad_to_multiple_of=PAD_MULTIPLE,
        precision="bf16 autocast" if dtype is not None else "fp32",
        max_grad_norm=cfg.optim.max_grad_norm,
        weight_decay=cfg.optim.weight_decay,
    )
    return {
        "tokens_per_s": sum(steady) / len(steady),
        "windows": [round(w) for w in windows],
        "settings": settings,
    }


def side_trl(args, path: str, rows: list, *, matched: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from crome_ray.train.config import LoraSettings
    from crome_ray.train.model import load_reward_model

    cuda = torch.cuda.is_available()
    rm = load_reward_model(path, finetune="full")  # the same model class, head and pad token
    peft_config = None
    if args.finetune == "lora":
        from peft import LoraConfig

        from crome_ray.train.model import LORA_TARGETS

        s = LoraSettings()
        targets = LORA_TARGETS.get(rm.model.config.model_type, "all-linear")
        peft_config = LoraConfig(
            r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=targets, task_type="SEQ_CLS"
        )
    columns = {
        "chosen_ids": [r.ids_a.tolist() for r in rows],
        "rejected_ids": [r.ids_b.tolist() for r in rows],
    }
    if matched:
        columns["length"] = [int(r.length) for r in rows]  # crome-ray groups by the longer side, so does this
    data = Dataset.from_dict(columns)
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), trainer._total_train_tokens))

    same_work = {}
    if matched:
        same_work = {
            "gradient_checkpointing": args.gradient_checkpointing == "on",
            "disable_dropout": False,
            "train_sampling_strategy": "group_by_length",
            "remove_unused_columns": False,  # keep the length column for the sampler; the collator ignores it
            "pad_to_multiple_of": PAD_MULTIPLE,
        }
    config = RewardConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        bf16=cuda,
        logging_steps=args.log_every,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        max_length=None,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        **same_work,
    )
    trainer = RewardTrainer(
        model=rm.model,
        args=config,
        train_dataset=data,
        processing_class=rm.tokenizer,
        peft_config=peft_config,
        callbacks=[Clock()],
    )
    meter = Meter()
    meter.attach(trainer.model)
    trainer.train()
    start = min(args.log_every, len(marks) - 1)  # the first window is warm-up, as on the other side
    (t0, n0), (t1, n1) = marks[start - 1], marks[-1]
    settings = effective(
        trainer.model,
        meter,
        order=config.train_sampling_strategy,
        pad_to_multiple_of=config.pad_to_multiple_of,
        precision="bf16 autocast" if config.bf16 else "fp32",
        max_grad_norm=config.max_grad_norm,
        weight_decay=config.weight_decay,
    )
    return {"tokens_per_s": (n1 - n0) / (t1 - t0), "settings": settings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", help="built-in name, path, or dummy-llama-1b")
    ap.add_argument("--finetune", default="full", choices=["full", "lora"])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument(
        "--gradient-checkpointing",
        default="off",
        choices=["off", "on"],
        help="for crome-ray and the matched TRL side (trl-defaults keeps TRL's own: on)",
    )
    ap.add_argument("--side", choices=SIDES, help="run one side in this process")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="crome-trl-bench-"))

    if args.side:
        import torch

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        path = model_path(args.model, work)
        rows = encoded_rows(path, args)
        if args.side == "crome-ray":
            result = side_crome(args, path, rows)
        else:
            result = side_trl(args, path, rows, matched=args.side == "trl")
        print("RESULT " + json.dumps(result), flush=True)
        return

    results = {}
    for side in SIDES:
        results[side] = run_side(__file__, side, args, PASSED_ON, "--work", str(work))
        if "tokens_per_s" in results[side]:
            results[side]["tokens_per_s"] = round(results[side]["tokens_per_s"], 1)

    import torch

    device, peak = "cpu", 0.0
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16.items() if k in device), 0.0)
    per_token = flops_per_token(model_path(args.model, work), args.finetune)
    for r in results.values():
        if "tokens_per_s" in r and peak and per_token:
            r["mfu"] = round(r["tokens_per_s"] * per_token / peak, 4)
    line = {
        "bench": "train_vs_trl",
        "device": device,
        "model": args.model,
        "finetune": args.finetune,
        "max_length": args.max_length,
        "batch_pairs": args.batch_size,
        "steps": args.steps,
        "pairs": args.pairs,
        "lr": args.lr,
        "threads": args.threads,
        "gradient_checkpointing": args.gradient_checkpointing,
        "results": results,
    }
    ours = results["crome-ray"].get("tokens_per_s")
    for side, key in (("trl", "ratio_vs_trl"), ("trl-defaults", "ratio_vs_trl_defaults")):
        if ours and "tokens_per_s" in results.get(side, {}):
            line[key] = round(ours / results[side]["tokens_per_s"], 3)
    print(json.dumps(line))
    print(f"\n{'side':>13} {'tokens/s':>10} {'MFU':>7} {'grad ckpt':>9} {'dropout':>7} {'pad eff':>7}  order")
    for side, r in results.items():
        if "error" in r:
            print(f"{side:>13} failed: {r['error'][-400:]}")
            continue
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        st = r["settings"]
        print(
            f"{side:>13} {r['tokens_per_s']:>10,.0f} {mfu:>7} {st['gradient_checkpointing']!s:>9} "
            f"{st['dropout_modules_active']:>7} {st['padding_efficiency']:>7.3f}  {st['order'][:40]}"
        )
    for key, name in (
        ("ratio_vs_trl", "TRL, same settings"),
        ("ratio_vs_trl_defaults", "TRL at its defaults"),
    ):
        if key in line:
            print(f"crome-ray / {name}: {line[key]:.2f}x")


if __name__ == "__main__":
    main()
