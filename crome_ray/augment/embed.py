"""Sentence embeddings of requests for IQN's choice of an irrelevant request (an adapter: transformers).

The model is all-MiniLM-L6-v2 by default (the built-in ``minilm``), used as its model card
says: mean of the token embeddings over the attention mask, then L2-normalised. That recipe
is four lines of torch, so sentence-transformers is not a dependency for it. Texts are cut
at ``max_length`` tokens (MiniLM was trained on 128): a request's opening says what it is
about. Batches are sorted by length so little of each is padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class Embedder:
    def __init__(self, path: str | Path, *, max_length: int = 128, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text, in the order given."""
        torch = self.torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
        return out
