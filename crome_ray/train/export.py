"""The trained reward model, saved where plain transformers (and PEFT) load it.

A training run folder gets:
- ``model/``: the whole model in HF format (LoRA merged into the base), loadable with
  ``AutoModelForSequenceClassification.from_pretrained`` and nothing of ours;
- ``adapter/`` (LoRA runs): the PEFT adapter with the score head, loadable with
  ``AutoPeftModelForSequenceClassification``; small, for sharing or stacking;
- ``model/probe.json``: a few fixed (prompt, response) pairs and the scores the model
  gave them at the end of training, so anyone can check an exported copy (the tests do).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from crome_ray.storage import Folder
from crome_ray.train.batches import PairEncoder, pad_sequences
from crome_ray.train.model import RewardModel

PROBE = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "I think it might be Lyon, or maybe Marseille."),
    (
        "Write a haiku about rain.",
        "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky",
    ),
    (
        "How do I reverse a list in Python?",
        "Use `my_list.reverse()` in place, or `my_list[::-1]` for a copy.",
    ),
]


@torch.no_grad()
def score_texts(
    model: torch.nn.Module, encoder: PairEncoder, pairs: list[tuple[str, str]], batch_size: int = 16
) -> list[float]:
    """Rewards for (prompt, response) pairs, in their order (batched by length inside)."""
    encoded = [encoder.encode(p, r).ids for p, r in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    out = [0.0] * len(encoded)
    pad_id = encoder.tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_sequences([encoded[i] for i in idx], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for i, value in zip(idx, logits.squeeze(-1).float().tolist(), strict=True):
            out[i] = value
    return out


def export_model(rm: RewardModel, run: Folder, max_length: int, *, merged: bool = True) -> dict[str, str]:
    """Save ``rm`` (its weights as they are now) into ``run``; returns what was written where."""
    encoder = PairEncoder(rm.tokenizer, max_length, is_decoder=rm.is_decoder)
    probe = [
        {"prompt": p, "response": r, "score": s}
        for (p, r), s in zip(PROBE, score_texts(rm.model, encoder, PROBE), strict=True)
    ]
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="crome-export-") as tmp:
        root = Path(tmp)
        model = rm.model
        if rm.lora:
            model.save_pretrained(str(root / "adapter"))
            rm.tokenizer.save_pretrained(str(root / "adapter"))
            written["adapter"] = run.uri_of("adapter")
            if merged:
                model = model.merge_and_unload()
        if merged or not rm.lora:
            model.save_pretrained(str(root / "model"))
            rm.tokenizer.save_pretrained(str(root / "model"))
            (root / "model" / "probe.json").write_text(json.dumps(probe, indent=2))
            written["model"] = run.uri_of("model")
        else:
            (root / "adapter" / "probe.json").write_text(json.dumps(probe, indent=2))
        for name in written:
            target = run.file(name)
            if run.fs.exists(target):
                run.fs.rm(target, recursive=True)
            run.fs.put(str(root / name), target, recursive=True)
    return written
