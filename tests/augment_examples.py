"""Sample examples for the augmentation's tests."""

import json
from pathlib import Path

from crome_ray.augment import prompts as P


def mid_sized_example(samples: Path, id_: str = "x") -> P.Example:
    """The first eval-sample pair whose request and answers are all of a middling length."""
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    r = next(
        r
        for r in rows
        if 200 < len(r["prompt"]) < 800 and 400 < len(r["chosen"]) < 1400 and 300 < len(r["rejected"]) < 1400
    )
    return P.Example(id_, r["prompt"], r["chosen"], r["rejected"])
