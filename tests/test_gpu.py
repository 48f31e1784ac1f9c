"""The GPU tier: the training loop, FSDP and scoring on one CUDA GPU.

The GPU paths are the CPU paths with other settings (``device``, ``precision``, the NCCL
backend), so these tests run the same functions the CPU tests run and ask for the same
answers: the CPU run (or the plain, unsharded run) is the reference. They skip, saying
why, where ``torch.cuda.is_available()`` is False.

Run as: .venv/bin/pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from crome_ray.storage import Folder
from crome_ray.train.batches import collate, rewards
from crome_ray.train.export import PROBE, export_model
from crome_ray.train.loop import LocalRuntime, train_worker
from crome_ray.train.score import RewardScorer
from crome_ray.train.sharding import is_sharded, shard
from tests.conftest import free_port
from tests.test_train import config, encoded

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]

CUDA = torch.device("cuda", 0)


@dataclass
class WatchedRuntime(LocalRuntime):
    """A ``LocalRuntime`` that notes, when the loop hands it the model, the trainable weights
    as they start and the dtype every ``Linear`` layer computes in from then on."""

    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    linear_dtypes: set[torch.dtype] = field(default_factory=set)
    param_dtypes: set[torch.dtype] = field(default_factory=set)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().wrap(model)
        self.initial = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.param_dtypes = {p.dtype for p in model.parameters()}
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda _m, _i, out: self.linear_dtypes.add(out.dtype))
        return model


@pytest.fixture(scope="module")
def pair_rows(tiny_llama, samples):
    """31 training rows and 9 evaluation rows (3 of them ties), as the FSDP tests split them."""
    rows = encoded(tiny_llama, samples, 40, ties=6)
    return rows[3:34], rows[:3] + rows[34:]


# --- a) bf16 autocast on CUDA ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "computes_in", "first_loss_tol"),
    [
        pytest.param("auto", torch.bfloat16, 1e-2, id="auto"),
        pytest.param("bf16", torch.bfloat16, 1e-2, id="bf16"),
        pytest.param("fp32", torch.float32, 1e-4, id="fp32"),
    ],
)
def test_training_on_cuda_computes_in_the_precision_asked_and_matches_the_cpu_run(
    tiny_llama, pair_rows, precision, computes_in, first_loss_tol
):
    """``auto`` means bf16 on a GPU: the layers compute in bf16 under autocast while the
    weights the optimizer updates stay fp32. The first step's loss (computed before any
    update, from the same seeded weights on the same batch) is the CPU fp32 run's loss, up
    to bf16 rounding."""
    train, evaluation = pair_rows
    cfg = config(model=str(tiny_llama), precision=precision, **{"optim.lr": 1e-2})
    gpu = WatchedRuntime(train, eval=evaluation, device=CUDA)
    kept: dict = {}
    last = train_worker(cfg, str(tiny_llama), gpu, total_steps=4, export=lambda rm: kept.setdefault("rm", rm))

    assert gpu.linear_dtypes == {computes_in}
    assert gpu.param_dtypes == {torch.float32}  # autocast, not a model cast to bf16
    assert [r["step"] for r in gpu.reports] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in gpu.reports)
    assert last["eval_pairs"] + last["eval_ties"] == 9 and math.isfinite(last["eval_loss_bt"])
    after = dict(kept["rm"].model.named_parameters())
    assert all(p.device == CUDA for p in after.values())
    moved = [n for n, w in gpu.initial.items() if not torch.equal(w, after[n].detach().cpu())]
    assert any("score" in n for n in moved) and any("lora_" in n for n in moved)

    cpu = LocalRuntime(train, eval=evaluation)
    train_worker(cfg.model_copy(update={"precision": "fp32"}), str(tiny_llama), cpu, total_steps=1)
    assert gpu.reports[0]["loss"] == pytest.approx(cpu.reports[0]["loss"], abs=first_loss_tol)


# --- b) FSDP on one GPU over NCCL -----------------------------------------------------------


@dataclass
class OneGpuGroupRuntime(LocalRuntime):
    """A ``LocalRuntime`` inside a one-process NCCL group: the model is sharded with FSDP2
    (over one rank) and sums go through ``all_reduce`` on the GPU, as ``RayRuntime`` does."""

    sharded: bool = False

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        model = shard(model, self.device)
        self.sharded = is_sharded(model)
        return model

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def _exported(out: dict, probe_rows: list):
    """The export callback: the exported weights, and its rewards for a few rows on the GPU."""

    def export(rm) -> None:
        out["plain"] = not is_sharded(rm.model)
        out["weights"] = {k: v.detach().cpu().clone() for k, v in rm.model.state_dict().items()}
        model = rm.model.to(CUDA)
        with torch.no_grad():
            r_a, r_b = rewards(model, collate(probe_rows, rm.tokenizer.pad_token_id).to(CUDA))
        out["rewards"] = torch.cat([r_a, r_b]).cpu()

    return export


def _fsdp_worker(rank: int, port: int, job: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(CUDA)
    torch.distributed.init_process_group("nccl", rank=rank, world_size=1, device_id=CUDA)
    try:
        with open(job["rows"], "rb") as f:
            train, evaluation = pickle.load(f)
        out: dict = {}
        runtime = OneGpuGroupRuntime(train, eval=evaluation, device=CUDA)
        cfg = config(**job["cfg"])
        out["metrics"] = train_worker(
            cfg, job["model"], runtime, job["steps"], export=_exported(out, evaluation[:4])
        )
        out["sharded"] = runtime.sharded
        torch.save(out, job["out"])
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(
    torch.cuda.is_available() and not torch.distributed.is_nccl_available(),
    reason="needs PyTorch built with NCCL",
)
@pytest.mark.parametrize(
    ("finetune", "precision", "atol"),
    [("full", "fp32", 1e-4), ("lora", "fp32", 1e-4), ("full", "auto", 2e-3)],
)
def test_fsdp_over_one_gpu_computes_what_plain_training_on_that_gpu_computes(
    tiny_llama, pair_rows, tmp_path, finetune, precision, atol
):
    """One NCCL rank holds every shard, so FSDP's gathers and reduce-scatters must leave the
    numbers exactly as plain training leaves them: the same weights, rewards, losses and
    evaluation after 4 steps (two micro-batches each, evaluated every 2 steps)."""
    over = {"finetune": finetune, "precision": precision, "grad_accum": 2, "eval_every": 2, "optim.lr": 0.01}
    steps = 4
    rows_file = tmp_path / "rows.pkl"
    with open(rows_file, "wb") as f:
        pickle.dump(pair_rows, f)
    job = {
        "model": str(tiny_llama),
        "rows": str(rows_file),
        "steps": steps,
        "cfg": over,
        "out": str(tmp_path / "fsdp.pt"),
    }
    mp.spawn(_fsdp_worker, args=(free_port(), job), nprocs=1, join=True)
    fsdp = torch.load(job["out"], weights_only=False)

    train, evaluation = pair_rows
    plain: dict = {}
    plain["metrics"] = train_worker(
        config(**over),
        str(tiny_llama),
        LocalRuntime(train, eval=evaluation, device=CUDA),
        steps,
        export=_exported(plain, evaluation[:4]),
    )

    assert fsdp["sharded"] and fsdp["plain"]  # trained sharded, exported as a gathered plain copy
    assert set(fsdp["weights"]) == set(plain["weights"])
    for name, w in plain["weights"].items():
        torch.testing.assert_close(fsdp["weights"][name], w, atol=atol, rtol=10 * atol, msg=name)
    torch.testing.assert_close(fsdp["rewards"], plain["rewards"], atol=atol, rtol=10 * atol)
    for key in ("loss", "eval_loss_bt", "eval_accuracy", "eval_pairs", "eval_ties"):
        assert fsdp["metrics"][key] == pytest.approx(plain["metrics"][key], rel=10 * atol, abs=atol), key
    assert fsdp["metrics"]["eval_pairs"] + fsdp["metrics"]["eval_ties"] == 9


# --- c) an export scores the same on the GPU and on the CPU ---------------------------------


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_a_model_trained_and_exported_on_the_gpu_scores_the_same_on_the_gpu_and_the_cpu(
    tiny_llama, pair_rows, tmp_path, finetune
):
    train, _ = pair_rows
    cfg = config(model=str(tiny_llama), finetune=finetune, **{"optim.lr": 1e-2})
    run = Folder.from_uri(str(tmp_path / "run"))
    run.fs.makedirs(run.path, exist_ok=True)
    train_worker(
        cfg,
        str(tiny_llama),
        LocalRuntime(train, device=CUDA),
        total_steps=4,
        export=lambda rm: export_model(rm, run, cfg.max_length),
    )

    prompts, responses = [p for p, _ in PROBE], [r for _, r in PROBE]
    on_gpu = RewardScorer(str(tmp_path / "run"), device=str(CUDA))
    on_cpu = RewardScorer(str(tmp_path / "run"), device="cpu")
    assert next(on_gpu.model.parameters()).device == CUDA
    assert next(on_cpu.model.parameters()).device.type == "cpu"
    gpu_scores = on_gpu.score(prompts, responses)
    cpu_scores = on_cpu.score(prompts, responses)
    assert gpu_scores == pytest.approx(cpu_scores, abs=1e-3)
    assert len({round(s, 3) for s in cpu_scores}) > 1  # a model that says one number tests nothing
    probe = json.loads(Path(tmp_path / "run" / "model" / "probe.json").read_text())
    assert [p["score"] for p in probe] == pytest.approx(cpu_scores, abs=1e-3)  # scored on the GPU at export


@pytest.mark.ray
def test_the_local_oracle_on_a_gpu_answers_what_it_answers_on_the_cpu(tmp_path, ray_cluster, smollm2_path):
    """The vLLM backend with ``engine.device=cuda`` (package ``vllm``): the same job, greedy, bf16
    on the GPU against float32 on the CPU; the GPU answers must be valid JSON under the same schema.
    Skips where the GPU package is missing (the lent machines have no vllm)."""
    pytest.importorskip("vllm", reason="needs the GPU package vllm (pip install crome-ray[vllm])")
    import jsonschema
    from pydantic import SecretStr

    from crome_ray.oracle.job import run_oracle_job
    from tests.oracle_jobs import oracle_job

    schema = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}}}
    rows = [{"id": str(i), "prompt": f"Is {i}+{i}={2 * i}?", "schema": json.dumps(schema)} for i in range(8)]
    cfg = oracle_job(
        tmp_path,
        rows,
        "fallback.policy=local_only",
        "fallback.oracle.engine.device=cuda",
        "fallback.oracle.engine.gpu_memory_utilization=0.3",
    )
    result = run_oracle_job(cfg, SecretStr(""))
    rows = result.run.read_table("responses").to_pylist()
    assert len(rows) == 8 and all(r["backend"] == "vllm" for r in rows)
    for r in rows:
        jsonschema.validate(json.loads(r["response"]), schema)
    assert result.details["oracle"]["engines"][0]["startup_s"] > 0
