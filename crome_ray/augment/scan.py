"""The driver's one pass over the input, before any call: the dry run's projection, the examples
that carry the verifier's control probes, and the pool of requests IQN and RRM choose from.

The pass streams the pairs table (constant memory): ``InputScan`` keeps counts, the first
``controls.examples`` example ids (and the probes' tasks, to price them), the first
``oracle_examples`` ids, and a reservoir sample of ``iqn.pool`` requests. ``project_input``
runs it through ``plan.project`` with the oracle's token count and price.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from crome_ray.augment import prompts as P
from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.flow import control_tasks
from crome_ray.augment.plan import PlannedTask, Projection, expected_output_tokens, project
from crome_ray.oracle.config import OracleConfig
from crome_ray.storage import path_in_filesystem, pyarrow_filesystem

SCAN_COLUMNS = ["source_id", "prompt", "chosen", "rejected", "label"]


def token_counter(o: OracleConfig) -> tuple[Callable[[str], int], str]:
    """The dry run's token count: the local model's own tokenizer, or ~4 characters a token
    (Gemini's documented rule of thumb; its tokenizer is a remote call)."""
    if o.local:
        try:
            from transformers import AutoTokenizer

            from crome_ray.models import resolve_model

            tok = AutoTokenizer.from_pretrained(str(resolve_model(o.model)))
            return (lambda text: len(tok.encode(text, add_special_tokens=False))), f"{o.model} tokenizer"
        except Exception:  # a model not on this machine: the estimate below
            pass
    return (lambda text: max(1, (len(text) + 3) // 4)), "4 characters a token"


class InputScan:
    """What one pass over the input gives the driver, in constant memory."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.rows = 0
        self.examples = 0
        self.control_ids: list[str] = []
        self.oracle_ids: list[str] = []  # with oracle_examples: the examples the oracle works on
        self.control_examples = (  # the probes ride on examples the oracle works on
            cfg.controls.examples
            if cfg.oracle_examples is None
            else min(cfg.controls.examples, cfg.oracle_examples)
        )
        self.controls: list[PlannedTask] = []  # the control probes' tasks (a fixed number at most)
        self.pool: list[tuple[str, str]] = []  # (request, chosen answer)
        self._rng = random.Random(cfg.iqn.seed)
        self._seen_requests = 0

    def examples_of(self, files: list[str], fs) -> Iterator[P.Example]:
        import pyarrow.parquet as pq

        cfg = self.cfg
        probes, tasks = cfg.tasks.verify and not cfg.tasks.rrm, cfg.run_tasks()
        for f in files:
            pf = pq.ParquetFile(path_in_filesystem(f), filesystem=fs)
            for batch in pf.iter_batches(batch_size=1024, columns=SCAN_COLUMNS):
                for row in batch.to_pylist():
                    if cfg.limit is not None and self.rows >= cfg.limit:
                        return
                    self.rows += 1
                    self._sample(row["prompt"], row["chosen"])
                    if row["label"] != "chosen":
                        continue
                    self.examples += 1
                    ex = P.Example(row["source_id"], row["prompt"], row["chosen"], row["rejected"])
                    if cfg.oracle_examples is not None and len(self.oracle_ids) < cfg.oracle_examples:
                        self.oracle_ids.append(row["source_id"])
                    if probes and len(self.control_ids) < self.control_examples:
                        self.control_ids.append(row["source_id"])
                        self.controls += control_tasks(ex, ex.rejected, tasks)  # the real probes' size
                    yield ex

    def _sample(self, request: str, chosen: str) -> None:
        """Reservoir sampling (algorithm R): every request equally likely to be in the pool."""
        self._seen_requests += 1
        if len(self.pool) < self.cfg.iqn.pool:
            self.pool.append((request, chosen))
        else:
            j = self._rng.randrange(self._seen_requests)
            if j < self.cfg.iqn.pool:
                self.pool[j] = (request, chosen)


def project_input(
    cfg: AugmentConfig, files: list[str], oracle: OracleConfig
) -> tuple[InputScan, dict[str, Any]]:
    """The dry run: one pass over the input; the calls, tokens and dollars a run would take."""
    scan = InputScan(cfg)
    count, how = token_counter(oracle)
    started = time.monotonic()
    proj: Projection = project(
        scan.examples_of(files, pyarrow_filesystem(files[0], cfg.storage)),
        cfg.run_tasks(),
        count,
        oracle.price(),
        oracle_examples=cfg.oracle_examples,
    )
    for t in scan.controls:  # the verifier's control probes are calls too
        proj.calls["control"] = proj.calls.get("control", 0) + 1
        proj.input_tokens += count(t.task.system) + count(t.task.prompt)
        proj.output_tokens += expected_output_tokens(t, count)
    if proj.usd is not None:
        price = oracle.price()
        proj.usd = (proj.input_tokens * price.input_per_m + proj.output_tokens * price.output_per_m) / 1e6
    cap = float(oracle.budget.cap_usd)
    return scan, {
        **proj.as_dict(),
        "source_rows": scan.rows,
        "oracle": f"{oracle.backend} {oracle.model}",
        "tokens_counted_by": how,
        "cap_usd": cap,
        "within_cap": proj.usd is None or proj.usd <= cap,
        "seconds": round(time.monotonic() - started, 2),
        "note": "an upper bound on calls (every rewrite assumed to pass its checks; retries aside); "
        "tokens are estimates; the cap, not this, bounds the spend",
    }
