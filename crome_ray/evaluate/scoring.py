"""Batched scoring on Ray Data actors: each actor holds one copy of a reward model (on a GPU
when it has one) and scores batches of (prompt, answer) texts.

The texts are sorted by length before they are cut into batches, so a batch pads to about
its own length rather than to the longest text of the set (``bench/score_throughput.py``
measures what that is worth against a plain loop over the same model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from crome_ray.config import StorageConfig
from crome_ray.evaluate.config import ScoringSettings


class ScoreStage:
    """A Ray Data actor: the reward model loaded once, then ``__call__`` per batch of texts."""

    def __init__(self, **scorer: Any):
        """``scorer``: ``train.score.actor_scorer``'s arguments (a ``scorer_pool`` gives them)."""
        from crome_ray.ray_runtime import quiet_ray_data_logs
        from crome_ray.train.score import actor_scorer

        quiet_ray_data_logs()
        self.scorer = actor_scorer(**scorer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = self.scorer.score(
            [str(x) for x in batch.column("prompt").to_pylist()],
            [str(x) for x in batch.column("response").to_pylist()],
        )
        return pa.table({"key": batch.column("key"), "score": pa.array(scores, pa.float64())})


def score_on_ray(
    model: str,
    texts: Mapping[str, tuple[str, str]],
    settings: ScoringSettings,
    storage: StorageConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """``key -> reward`` for every ``key -> (prompt, answer)`` of ``texts``."""
    import ray

    from crome_ray.train.score import scorer_pool

    keys = sorted(texts, key=lambda k: len(texts[k][0]) + len(texts[k][1]))
    table = pa.table(
        {
            "key": keys,
            "prompt": [texts[k][0] for k in keys],
            "response": [texts[k][1] for k in keys],
        }
    )
    # blocks of a few batches: the actors share the work, and each block holds texts of similar length
    rows_per_block = max(settings.batch_size, min(4 * settings.batch_size, -(-len(keys) // settings.workers)))
    blocks = [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]
    pool = scorer_pool(model, storage, max_length=settings.max_length, batch_size=settings.batch_size,
                       workers=settings.workers, cpus=settings.cpus, gpus=settings.gpus)  # fmt: skip
    # a block at a time: the block is already a run of similar lengths
    ds = ray.data.from_arrow(blocks).map_batches(ScoreStage, **pool, batch_size=None, batch_format="pyarrow")
    out: dict[str, float] = {}
    started = time.monotonic()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        out.update(zip(batch.column("key").to_pylist(), batch.column("score").to_pylist(), strict=True))
        if progress:
            progress(len(out), len(keys), time.monotonic() - started)
    missing = len(keys) - len(out)
    if missing:
        raise RuntimeError(f"{missing} of {len(keys)} texts came back without a score")
    return out
