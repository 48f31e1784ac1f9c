"""A base model as a scalar reward model: transformers' sequence-classification head with
one output, optionally wrapped in a PEFT LoRA adapter.

Decoders read the reward at the last non-pad token (transformers does this from the pad
id), so a tokenizer without a pad token gets one that never ends a sequence: its unk
token, else its eos token. LoRA targets the attention projections of the architecture
(a table below; others fall back to PEFT's ``all-linear``); the score head is always
trained and saved with the adapter (PEFT's ``modules_to_save`` for sequence
classification).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crome_ray.config import StorageConfig
from crome_ray.train.config import LoraSettings

LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "gpt2": ["c_attn"],
}


ENCODER_TYPES = frozenset({"bert", "roberta", "deberta-v2", "distilbert", "electra"})


def is_decoder_type(model_type: str) -> bool:
    """Whether a model of this ``config.model_type`` reads its reward at the last token."""
    return model_type not in ENCODER_TYPES


def cue_position(model: str, storage: StorageConfig) -> str:
    """Where a text added to an answer survives this model's truncation: the end for a decoder
    (its long inputs lose their first tokens), the start for an encoder (it loses the last)."""
    from transformers import AutoConfig

    from crome_ray.models import resolve_model

    path = resolve_model(model, storage=storage)
    return "end" if is_decoder_type(AutoConfig.from_pretrained(str(path)).model_type) else "start"


@dataclass
class RewardModel:
    model: torch.nn.Module  # returns .logits of shape (batch, 1)
    tokenizer: Any
    is_decoder: bool
    lora: bool

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ValueError("the tokenizer has no pad, unk or eos token to pad with; give the model one")
    return tokenizer


def load_reward_model(
    path: str | Path,
    *,
    finetune: str = "lora",
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    dtype: torch.dtype = torch.float32,
) -> RewardModel:
    """Load ``path`` (a local HF folder) as a reward model ready to train."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    config = AutoConfig.from_pretrained(str(path))
    is_decoder = is_decoder_type(config.model_type)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if finetune == "full":
        return RewardModel(model, tokenizer, is_decoder, lora=False)
    if finetune != "lora":
        raise ValueError(f"finetune must be 'lora' or 'full', not {finetune!r}")
    from peft import LoraConfig, TaskType, get_peft_model

    settings = lora or LoraSettings()
    targets = settings.target_modules or LORA_TARGETS.get(config.model_type, "all-linear")
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets) if not isinstance(targets, str) else targets,
    )
    return RewardModel(get_peft_model(model, peft_config), tokenizer, is_decoder, lora=True)


def score_head_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters of the reward head (``score`` for decoders, ``classifier`` for encoders)."""
    names = [n for n, _ in model.named_parameters() if ".score." in f".{n}" or ".classifier." in f".{n}"]
    return [n for n in names if "original_module" not in n]  # PEFT keeps a frozen copy beside the trained one
