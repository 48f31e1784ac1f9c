"""From pairs to padded tensors: chat template, truncation, length grouping, collation.

Each side of a pair is the conversation (prompt as the user turn, answer as the
assistant turn) through the tokenizer's chat template; an encoder without a template
reads the two texts as a sentence pair.

Truncation rule (counted per pair): a decoder reads the reward at the last token, so an
over-long decoder sequence keeps its last ``max_length`` tokens (the start of the
prompt goes first); an encoder reads its first ([CLS]) token, so the pair encoding
trims the longer text first (``longest_first``), keeping both starts.

Both sides of a batch go through the model in one forward pass: rows 0..B-1 are the
a-sides (the chosen answer of a preference pair), rows B..2B-1 the b-sides. Batches are
grouped by length (sorted within a buffer of many batches, then the batches shuffled)
and padded to their longest row, so little compute goes to padding.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    truncated: bool


# A token is rarely longer than this many characters on average: texts are cut to
# ``CHARS_PER_TOKEN × max_length`` characters before tokenizing, so the tokenizer never
# reads (or warns about) a text far past what can be kept. Where the cut leaves too few
# tokens to know the kept ones are the same, the text is tokenized whole after all.
CHARS_PER_TOKEN = 8


class PairEncoder:
    def __init__(self, tokenizer: Any, max_length: int, *, is_decoder: bool):
        self.tokenizer, self.max_length, self.is_decoder = tokenizer, max_length, is_decoder
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.max_chars = CHARS_PER_TOKEN * max_length

    def _tail_ids(self, text: str, **kwargs: Any) -> list[int]:
        """Token ids of ``text``, read from its last ``max_chars`` characters when that is
        enough to hold more than ``max_length`` tokens (the part that is kept)."""
        if len(text) > self.max_chars:
            ids = self.tokenizer(text[-self.max_chars :], **kwargs)["input_ids"]
            if len(ids) > self.max_length + 16:  # the cut's first word (a few tokens) is dropped anyway
                return ids
        return self.tokenizer(text, **kwargs)["input_ids"]

    def encode(self, prompt: str, response: str) -> Encoded:
        tok = self.tokenizer
        if self.templated:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=False,
            )
            ids = self._tail_ids(text, add_special_tokens=False)
        elif self.is_decoder:
            ids = self._tail_ids(prompt + "\n\n" + response)
        else:
            # both starts are kept: each text is cut to what could be kept, then the pair is
            # tokenized with room for one token more than fits (to know whether it was cut)
            p, r = prompt[: self.max_chars], response[: self.max_chars]
            limit = {"truncation": "longest_first", "max_length": self.max_length + 1}
            ids = tok(p, r, **limit)["input_ids"]
            if len(ids) <= self.max_length and (p, r) != (prompt, response):
                p, r = prompt, response  # the cut was too short to tell: read them whole
                ids = tok(p, r, **limit)["input_ids"]
            if len(ids) <= self.max_length:
                return Encoded(ids, False)
            return Encoded(
                tok(p, r, truncation="longest_first", max_length=self.max_length)["input_ids"], True
            )
        if len(ids) > self.max_length:
            return Encoded(ids[-self.max_length :], True)
        return Encoded(ids, False)

    def encode_pairs(self, rows: dict[str, Any]) -> dict[str, Any]:
        """A Ray Data batch (columns prompt, chosen, rejected, label) to token columns."""
        a_ids, b_ids, ties, lengths, truncated = [], [], [], [], []
        for prompt, a, b, label in zip(
            rows["prompt"], rows["chosen"], rows["rejected"], rows["label"], strict=True
        ):
            ea, eb = self.encode(str(prompt), str(a)), self.encode(str(prompt), str(b))
            a_ids.append(np.asarray(ea.ids, dtype=np.int32))
            b_ids.append(np.asarray(eb.ids, dtype=np.int32))
            ties.append(label == "tie")
            lengths.append(max(len(ea.ids), len(eb.ids)))
            truncated.append(ea.truncated or eb.truncated)
        out = np.empty(len(a_ids), dtype=object)
        out[:] = a_ids
        out_b = np.empty(len(b_ids), dtype=object)
        out_b[:] = b_ids
        return {
            "ids_a": out,
            "ids_b": out_b,
            "is_tie": np.asarray(ties, dtype=bool),
            "length": np.asarray(lengths, dtype=np.int32),
            "truncated": np.asarray(truncated, dtype=bool),
        }


@dataclass(frozen=True)
class PairRow:
    ids_a: np.ndarray
    ids_b: np.ndarray
    is_tie: bool
    length: int
    variant: int = 0  # validation rows: 0 as it is, 1 with the probe's cue on the rejected answer


def rows_of(batch: dict[str, Any]) -> list[PairRow]:
    variants = batch["variant"] if "variant" in batch else np.zeros(len(batch["length"]), dtype=int)
    return [
        PairRow(a, b, bool(t), int(n), int(v))
        for a, b, t, n, v in zip(
            batch["ids_a"], batch["ids_b"], batch["is_tie"], batch["length"], variants, strict=True
        )
    ]


def length_grouped(
    rows: Iterable[PairRow], batch_size: int, buffer_batches: int = 32, rng: random.Random | None = None
) -> Iterator[list[PairRow]]:
    """Batches of ``batch_size`` rows of similar length, from a stream (a buffer at a time)."""
    rng = rng or random.Random(0)
    buffer: list[PairRow] = []

    def flush() -> list[list[PairRow]]:
        buffer.sort(key=lambda r: r.length)
        batches = [buffer[i : i + batch_size] for i in range(0, len(buffer), batch_size)]
        rng.shuffle(batches)
        buffer.clear()
        return batches

    for row in rows:
        buffer.append(row)
        if len(buffer) >= batch_size * buffer_batches:
            yield from flush()
    if buffer:
        yield from flush()


@dataclass
class PairBatch:
    input_ids: torch.Tensor  # (2B, L): a-sides then b-sides
    attention_mask: torch.Tensor
    is_tie: torch.Tensor  # (B,)
    tokens: int  # real (non-pad) tokens

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.is_tie.to(device, non_blocking=True),
            self.tokens,
        )


def pad_sequences(seqs: list, pad_id: int, multiple_of: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token sequences to the longest (rounded up to ``multiple_of``): (ids, mask)."""
    longest = max(len(s) for s in seqs)
    width = -(-longest // multiple_of) * multiple_of
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
        mask[i, : len(s)] = 1
    return ids, mask


def collate(rows: list[PairRow], pad_id: int) -> PairBatch:
    """Both sides of ``rows`` in one padded batch: a-sides first, then b-sides."""
    seqs = [r.ids_a for r in rows] + [r.ids_b for r in rows]
    ids, mask = pad_sequences(seqs, pad_id)
    tie = torch.tensor([r.is_tie for r in rows], dtype=torch.bool)
    return PairBatch(ids, mask, tie, int(sum(len(s) for s in seqs)))


def rewards(model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_a, r_b) from one forward pass over both sides."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    r = out.logits.squeeze(-1).float()
    half = r.shape[0] // 2
    return r[:half], r[half:]
