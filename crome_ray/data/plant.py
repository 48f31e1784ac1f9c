"""A planted spurious attribute: the self-check's training data. Pure.

The self-check asks whether a run (its data, model, oracle and loss) can keep a reward model from
learning an attribute that predicts the label but says nothing about quality. It plants one: a
text (``cue.plant_cue``) on the chosen answer of a share of the training pairs, so the attribute
and the label go together. A baseline trained on those pairs learns to reward it; the held-out
pairs carry it on the rejected side (the evaluation's cue probe), where a model that learned it
gets them wrong.

Beside the planted pairs this builds the **positive control's** neutral ties: for each planted
answer, the answer with the attribute and without it, labelled tie. They are what Crome's
neutral augmentation would write if the oracle found the attribute exactly; a model trained on
them with the tie loss and still rewarding the attribute says the trainer and loss cannot
remove it in this setup, whatever the oracle writes.

Which pairs are planted depends on each pair's id and the seed only (not on row order), so the
same data planted twice gives the same pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from crome_ray.cue import Position, plant_cue
from crome_ray.records import PreferencePair

CONTROL_KIND = "neutral_exact"  # the positive control's ties: an answer with and without the attribute


@dataclass(frozen=True)
class Planted:
    pairs: list[PreferencePair]  # every input pair; a share with the attribute on its chosen answer
    control_ties: list[PreferencePair]  # per planted pair: its chosen answer with and without it, a tie
    planted: int  # how many pairs carry the attribute


def is_planted(pair_id: str, share: float, seed: int) -> bool:
    """Whether the pair gets the attribute: a hash of its id and the seed, below ``share``."""
    digest = hashlib.sha256(f"{seed}\x00{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def plant_attribute(
    pairs: Iterable[PreferencePair], text: str, *, share: float, position: Position = "start", seed: int = 0
) -> Planted:
    """``text`` planted on the chosen answer of about ``share`` of the preference pairs (ties are
    left as they are), and the positive control's exact ties for the planted answers."""
    if not text.strip():
        raise ValueError("the attribute to plant is empty")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    out, ties = [], []
    for p in pairs:
        if p.label != "chosen" or not is_planted(p.pair_id, share, seed):
            out.append(p)
            continue
        with_it = plant_cue(p.chosen, text, position)
        meta = {**p.metadata, "planted": text}
        out.append(replace(p, chosen=with_it, metadata=meta))
        ties.append(
            replace(p, chosen=with_it, rejected=p.chosen, label="tie", kind=CONTROL_KIND, metadata=meta)
        )
    return Planted(out, ties, len(ties))
