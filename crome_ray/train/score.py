"""Scoring (prompt, response) pairs with a trained reward model, in batches.

Used by ``crome-ray score``, the augmentation filter and the evaluation. ``model`` is a
training run folder (its ``model/``, else its ``adapter/``), a model folder (merged HF
model or PEFT adapter), an ``s3://`` folder or a built-in/HF name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crome_ray.config import StorageConfig
from crome_ray.models import ModelError, resolve_model
from crome_ray.storage import RunFolder, filesystem, join
from crome_ray.train.batches import PairEncoder
from crome_ray.train.export import score_texts
from crome_ray.train.model import is_decoder_type, prepare_tokenizer


def model_folder(uri: str, storage: StorageConfig | None = None) -> str:
    """A training run's exported model (merged first; from its committed attempt), or ``uri`` itself."""
    if uri.startswith("s3://") or Path(uri).is_dir():
        run = RunFolder.from_uri(uri, storage)
        if run.is_committed():
            uri = run.committed().uri
        fs, path = filesystem(uri, storage)
        for sub in ("model", "adapter"):
            if fs.exists(f"{path.rstrip('/')}/{sub}/config.json") or fs.exists(
                f"{path.rstrip('/')}/{sub}/adapter_config.json"
            ):
                return join(uri, sub)
    return uri


class RewardScorer:
    def __init__(
        self,
        model: str,
        *,
        storage: StorageConfig | None = None,
        max_length: int = 1024,
        batch_size: int = 16,
        device: str | None = None,
    ):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.source = model_folder(model, storage)
        path = resolve_model(self.source, storage=storage)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
        if (Path(path) / "adapter_config.json").exists():
            from peft import AutoPeftModelForSequenceClassification

            net = AutoPeftModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
            base_type = net.base_model.model.config.model_type
        else:
            net, info = AutoModelForSequenceClassification.from_pretrained(
                str(path), num_labels=1, output_loading_info=True
            )
            fresh = [k for k in info.get("missing_keys", ()) if k.split(".")[0] in ("score", "classifier")]
            if fresh:
                raise ModelError(
                    f"{self.source} has no trained reward head ({fresh[0]} is missing): it is a base "
                    "model; train it with `crome-ray train` and score with the run folder"
                )
            base_type = AutoConfig.from_pretrained(str(path)).model_type
        net.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = net.to(self.device).eval()
        self.encoder = PairEncoder(self.tokenizer, max_length, is_decoder_type(base_type))
        self.batch_size = batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return score_texts(
            self.model, self.encoder, list(zip(prompts, responses, strict=True)), self.batch_size
        )
