"""Scoring (prompt, response) pairs with a trained reward model, in batches.

Used by ``crome-ray score``, the augmentation filter and the evaluation. ``model`` is a
training run folder (its ``model/``, else its ``adapter/``), a model folder (merged HF
model or PEFT adapter), an ``s3://`` or ``gs://`` folder or a built-in/HF name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from crome_ray.config import StorageConfig
from crome_ray.errors import CromeError
from crome_ray.models import ModelError, resolve_model
from crome_ray.storage import RunFolder, filesystem, is_bucket_uri, join
from crome_ray.train.batches import PairEncoder
from crome_ray.train.export import score_texts
from crome_ray.train.model import is_decoder_type, prepare_tokenizer


def model_folder(uri: str, storage: StorageConfig | None = None) -> str:
    """A training run's exported model (merged first; from its committed attempt), or ``uri`` itself."""
    if is_bucket_uri(uri) or Path(uri).is_dir():
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
        self.encoder = PairEncoder(self.tokenizer, max_length, is_decoder=is_decoder_type(base_type))
        self.batch_size = batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return score_texts(
            self.model, self.encoder, list(zip(prompts, responses, strict=True)), self.batch_size
        )


def scorer_pool(
    model: str,
    storage: StorageConfig,
    *,
    max_length: int,
    batch_size: int,
    workers: int,
    cpus: float,
    gpus: float,
) -> dict[str, Any]:
    """Ray Data ``map_batches`` arguments for a pool of ``workers`` actors that each load ``model``
    once (``ActorScorer``'s arguments in ``fn_constructor_kwargs``; a stage adds its own)."""
    import ray

    return {
        "fn_constructor_kwargs": {
            "model": model,
            "storage_json": storage.model_dump_json(),
            "max_length": max_length,
            "batch_size": batch_size,
            "threads": max(1, round(cpus)),
        },
        "compute": ray.data.ActorPoolStrategy(size=workers),
        "num_cpus": cpus,
        "num_gpus": gpus,
    }


def actor_scorer(
    model: str, storage_json: str, max_length: int, batch_size: int, threads: int
) -> RewardScorer:
    """The scorer of an actor of a ``scorer_pool``: torch on ``threads`` threads (its Ray CPUs), the
    model resolved on the actor's own node."""
    torch.set_num_threads(threads)
    storage = StorageConfig.model_validate_json(storage_json)
    return RewardScorer(model, storage=storage, max_length=max_length, batch_size=batch_size)


class ScoreInputError(CromeError, ValueError):
    """A table to score that cannot be read or lacks the columns; the message says which."""


def read_score_input(path: str) -> pa.Table:
    """A jsonl or Parquet table: ``prompt`` and ``response``, or ``prompt``, ``chosen``, ``rejected``."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.endswith(".parquet") else pj.read_json(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ScoreInputError(f"cannot read {path}: {e}") from None
    cols = set(table.column_names)
    if "prompt" not in cols or not ({"response"} <= cols or {"chosen", "rejected"} <= cols):
        raise ScoreInputError(
            f"{path} needs a prompt column and response, or chosen and rejected; it has {sorted(cols)}"
        )
    return table


@dataclass(frozen=True)
class ScoredTable:
    table: pa.Table  # the input with score (or score_chosen and score_rejected) appended
    pairs: bool  # True: chosen/rejected pairs were scored
    accuracy: float | None  # pairs: the share with score_chosen > score_rejected


def score_table(scorer: RewardScorer, table: pa.Table) -> ScoredTable:
    prompts = [str(p) for p in table.column("prompt").to_pylist()]
    if "response" in table.column_names:
        scores = scorer.score(prompts, [str(r) for r in table.column("response").to_pylist()])
        return ScoredTable(table.append_column("score", pa.array(scores)), False, None)
    chosen = scorer.score(prompts, [str(r) for r in table.column("chosen").to_pylist()])
    rejected = scorer.score(prompts, [str(r) for r in table.column("rejected").to_pylist()])
    out = table.append_column("score_chosen", pa.array(chosen)).append_column(
        "score_rejected", pa.array(rejected)
    )
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / max(1, len(chosen))
    return ScoredTable(out, True, accuracy)


def write_scores(table: pa.Table, path: str) -> None:
    """``.parquet``, else JSON lines."""
    import json

    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        pq.write_table(table, path)
        return
    with open(path, "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
