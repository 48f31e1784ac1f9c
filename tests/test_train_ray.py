"""Training on Ray Train: 2-worker DDP on CPU, checkpoints on S3 (moto), a worker killed
mid-run, the export, and a real base model (SmolLM2 under FSDP)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import unicodedata
from pathlib import Path

import psutil
import pytest

from crome_ray.config import load_config
from crome_ray.storage import RunFolder
from crome_ray.train.config import TrainConfig
from crome_ray.train.export import PROBE
from crome_ray.train.job import run_train_job
from crome_ray.train.score import RewardScorer

pytestmark = pytest.mark.ray


def train_config(model, root, *extra, storage_endpoint=None) -> TrainConfig:
    over = [
        f"model={model}",
        f"storage.root={root}",
        "train_limit=64",
        "eval_limit=32",
        "max_length=96",
        "batch_size=4",
        "lora.r=4",
        "optim.lr=0.01",
        "scaling.workers=2",
        "scaling.cpus_per_worker=0.5",
        *([f"storage.endpoint_url={storage_endpoint}"] if storage_endpoint else []),
        *extra,
    ]
    return load_config(TrainConfig, None, over)


def test_two_worker_ddp_on_cpu_checkpoints_to_s3_and_exports_a_model_that_scores_the_same(
    s3, ray_cluster, tiny_llama
):
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/crome"
    cfg = train_config(
        tiny_llama,
        root,
        "max_steps=12",
        "checkpoint_every=5",
        "log_every=4",
        "eval_limit=31",
        storage_endpoint=s3.endpoint,
    )
    result = run_train_job(cfg)
    m = result.manifest
    assert not result.skipped and m["details"]["steps"] == 12 and m["details"]["final"]["step"] == 12
    assert m["counts"]["pairs"] == {"train": 64, "eval": 31}
    assert (
        0 <= m["details"]["final"]["eval_accuracy"] <= 1 and m["details"]["final"]["eval_pairs"] == 31
    )  # each once, none dropped
    fs = result.run.fs
    names = [p.rsplit("/", 1)[1] for p in fs.ls(result.run.file("ray"), detail=False)]
    checkpoints = [n for n in names if n.startswith("checkpoint_") and not n.endswith(".json")]
    assert len(checkpoints) == 2  # at steps 5, 10 and 12; the last two kept
    history = [
        json.loads(line) for line in fs.open(result.run.file("metrics.jsonl")).read().decode().splitlines()
    ]
    assert [h["step"] for h in history] == [4, 5, 8, 10, 12]
    assert set(m["details"]["exported"]) == {"model", "adapter"}

    probe = json.loads(fs.open(result.run.file("model", "probe.json")).read())
    scorer = RewardScorer(result.run.uri, storage=cfg.storage)
    scores = scorer.score([p for p, _ in PROBE], [r for _, r in PROBE])
    assert scores == pytest.approx([p["score"] for p in probe], abs=1e-4)

    again = run_train_job(cfg)
    assert again.skipped  # committed with the same config: nothing is redone


# In the long tier (a real 135M base, ~95 s): CI checks FSDP's sharding, weights, evaluation and
# export against DDP in two gloo processes (tests/test_train_fsdp.py)
@pytest.mark.long
def test_two_worker_fsdp_on_cpu_trains_smollm2_shards_and_exports_a_plain_model(
    tmp_path, ray_cluster, smollm2_path
):
    """A real base model (SmolLM2-135M, LoRA on its default modules) sharded over two workers:
    the adapter is gathered, merged and exported as a plain model that scores as the run did
    (full fine-tuning under FSDP is held to DDP's numbers in test_train_fsdp, outside Ray)."""
    cfg = train_config(
        "smollm2",
        tmp_path / "runs",
        "finetune=lora",
        "scaling.strategy=fsdp",
        "max_steps=4",
        "checkpoint_every=2",
        "eval_every=2",
        "train_limit=24",
        "eval_limit=15",
        "max_length=64",
        "batch_size=2",
    )
    result = run_train_job(cfg)
    m = result.manifest
    final = m["details"]["final"]
    assert m["details"]["steps"] == 4 and final["eval_pairs"] == 15  # every worker in step, each pair once
    assert final["tokens_per_s"] > 0 and set(m["details"]["exported"]) == {"model", "adapter"}
    probe = json.loads(result.run.fs.open(result.run.file("model", "probe.json")).read())
    # at the run's length: SmolLM2's template (its default system prompt) puts a probe past 64 tokens
    scorer = RewardScorer(result.run.uri, max_length=cfg.max_length)
    scores = scorer.score([p for p, _ in PROBE], [r for _, r in PROBE])
    assert scores == pytest.approx([p["score"] for p in probe], abs=1e-4)
    assert len({round(s, 4) for s in scores}) > 1  # a trained head, not a constant


def train_worker_pids() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
    ]


# In the long tier: tests/test_multinode.py kills a whole node of a 2-node run (its worker with it),
# resumes from the bucket's checkpoint and checks the steps trained again come out the same, in CI
@pytest.mark.long
def test_a_worker_killed_mid_run_resumes_from_the_s3_checkpoint_and_finishes(s3, ray_cluster, tiny_llama):
    bucket = s3.new_bucket()
    cfg = train_config(
        tiny_llama, f"s3://{bucket}/crome", "max_steps=100", "checkpoint_every=20", "log_every=20",
        "eval_data=null", "max_failures=2", storage_endpoint=s3.endpoint,
    )  # fmt: skip
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("result", run_train_job(cfg)))
    runner.start()
    fs = None
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and runner.is_alive():
        from crome_ray.storage import filesystem

        fs, _ = filesystem(f"s3://{bucket}/crome", cfg.storage)
        # a checkpoint counts once Ray Train has registered it (its snapshot names it)
        snapshots = fs.glob(f"{bucket}/crome/train/*/attempts/*/ray/checkpoint_manager_snapshot.json")
        if snapshots and "checkpoint_2" in fs.cat(snapshots[0]).decode():
            pids = train_worker_pids()
            if pids:
                killed = pids[-1]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.2)
    runner.join(600)
    assert killed is not None, "no checkpoint appeared before the run ended: the run is too short to test"
    result = out["result"]
    final = result.details["final"]
    steps = [
        json.loads(line)["step"]
        for line in result.run.fs.cat(result.run.file("metrics.jsonl")).decode().splitlines()
    ]
    assert final["step"] == 100
    assert final["started_at_step"] >= 20 and final["started_at_step"] % 20 == 0  # from a checkpoint
    assert result.details["resumed"] is True
    resumed_at = final["started_at_step"]
    after_restart = list(range(resumed_at + 20, 101, 20))
    assert steps[-len(after_restart) :] == after_restart and resumed_at in steps[: -len(after_restart)]
    assert result.run.is_committed()


def test_crome_ray_train_from_the_command_line_then_a_failed_forced_rerun_leaves_its_run_intact(
    tmp_path, ray_cluster, tiny_llama, monkeypatch, samples
):
    import shutil

    from typer.testing import CliRunner

    from crome_ray.cli import app

    (tmp_path / "data").mkdir()
    shutil.copy(samples / "ultrafeedback" / "train_1k.jsonl", tmp_path / "data" / "train.jsonl")
    shutil.copy(samples / "ultrafeedback" / "eval_200.jsonl", tmp_path / "data" / "eval.jsonl")
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them; Ray Train's workers run elsewhere
    args = ["train", "--model", str(tiny_llama), "--output", "runs", "--run-name", "cli",
            "--data", "data/train.jsonl", "eval_data=data/eval.jsonl",
            "--max-steps", "2", "--workers", "1", "train_limit=16", "eval_limit=8", "max_length=64",
            "scaling.cpus_per_worker=0.5"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "16 training pairs" in res.output and "eval pair accuracy" in res.output
    assert (tmp_path / "runs" / "train" / "cli" / "_COMMITTED").exists()
    assert (tmp_path / "runs" / "train" / "cli" / "_COMMITTED").exists()
    assert Path(
        RunFolder.from_uri(str(tmp_path / "runs" / "train" / "cli")).file("model", "config.json")
    ).exists()
    # the same run forced again with a config that fails in the workers (one Ray Train start saved
    # by reusing this committed run)
    broken = load_config(
        TrainConfig,
        None,
        [f"model={tiny_llama}", "storage.root=runs", "run_name=cli", "train_data=data/train.jsonl",
         "eval_data=data/eval.jsonl", "max_steps=2", "scaling.workers=1", "train_limit=16", "eval_limit=8",
         "max_length=64", "scaling.cpus_per_worker=0.5", "lora.target_modules=[no_such_module]",
         "max_failures=0"],
    )  # fmt: skip
    forced_failure_leaves_the_committed_run_byte_identical(tmp_path / "runs" / "train" / "cli", broken)
    res = CliRunner().invoke(app, ["train", "--model", str(tiny_llama), "scaling.workers=0"])
    assert res.exit_code == 2 and "scaling.workers" in res.output


def forced_failure_leaves_the_committed_run_byte_identical(folder: Path, broken: TrainConfig) -> None:
    """A forced re-run that fails writes only in its own attempt folder; the committed run (its
    files, its manifest, the model it serves) is untouched."""
    import hashlib

    from crome_ray.train.job import TrainError

    def snapshot():
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip

    before, manifest = snapshot(), RunFolder.from_uri(str(folder)).manifest()
    with pytest.raises(TrainError, match="NoMatchingPeftModuleError"):
        run_train_job(broken, force=True)
    after = snapshot()
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) > len(before)  # the failed attempt wrote, but only in its own folder
    assert RunFolder.from_uri(str(folder)).manifest() == manifest
    scores = RewardScorer(str(folder)).score([PROBE[0][0]], [PROBE[0][1]])
    assert len(scores) == 1  # the committed model is still the one served


def test_the_global_shuffle_mixes_kinds_into_every_workers_share_and_changes_each_epoch(
    tmp_path, ray_cluster, tiny_llama, samples
):
    """40 preference pairs, then 40 ties, in file order: without a global shuffle rank 0
    would get every preference pair and rank 1 every tie, and each epoch would end in ties."""
    from crome_ray.data.inputs import pair_files, pairs_run
    from crome_ray.train.dataset import shuffled_each_epoch, tokenized

    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()]

    def visible(text):  # the ingest quarantines a text with nothing visible (U+200B alone, in the sample)
        return any(not unicodedata.category(ch).startswith(("Z", "C")) for ch in text)

    rows = [
        r for r in rows if visible(r["chosen"]) and visible(r["rejected"]) and r["chosen"] != r["rejected"]
    ][:80]
    source = tmp_path / "ordered.jsonl"
    source.write_text(
        "".join(
            json.dumps({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                        "label": "tie" if i >= 40 else "chosen"}) + "\n"
            for i, r in enumerate(rows)
        )
    )  # fmt: skip
    cfg = train_config(tiny_llama, tmp_path / "runs", f"train_data={source}", "train_limit=null")
    files = pair_files(pairs_run(str(source), cfg.storage))
    ds = shuffled_each_epoch(tokenized(files, cfg, str(tiny_llama), None, swap_labels=False), cfg.seed)

    shares: list[list] = [[], []]
    splits = ds.streaming_split(2, equal=True)  # what Ray Train's DataConfig does with "train"

    def consume(rank):
        for batch in splits[rank].iter_batches(batch_size=16, batch_format="numpy"):
            shares[rank].extend(batch["is_tie"].tolist())

    threads = [threading.Thread(target=consume, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [len(s) for s in shares] == [40, 40]
    for share in shares:
        assert 0.3 <= sum(share) / len(share) <= 0.7  # kinds in proportion (0.5), not 0 and 1

    epoch1 = [(r["pair_id"], bool(r["is_tie"])) for r in ds.iter_rows()]
    epoch2 = [(r["pair_id"], bool(r["is_tie"])) for r in ds.iter_rows()]
    assert sorted(epoch1) == sorted(epoch2) and epoch1 != epoch2  # reshuffled at each pass
    assert 0.3 <= sum(t for _, t in epoch1[:40]) / 40 <= 0.7  # one worker: ties spread, not at the end


def test_a_seed_names_the_training_order_whatever_order_the_pairs_were_written_in(
    tmp_path, ray_cluster, tiny_llama, samples
):
    """The same 60 pairs written twice, in opposite orders (an augmentation's sinks write in
    completion order): under one seed both train on the same rows in the same order, at every
    epoch, and so does a train_limit (the same subset, not the first rows written)."""
    from crome_ray.data.inputs import pair_files, pairs_run
    from crome_ray.train.dataset import shuffled_each_epoch, tokenized

    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "train_1k.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["chosen"].strip() and r["rejected"].strip() and r["chosen"] != r["rejected"]]
    rows = rows[:60]

    def written(name, order):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                                for r in order))  # fmt: skip
        return path

    def order_of(source, limit):
        cfg = train_config(tiny_llama, tmp_path / "runs", f"train_data={source}", "train_limit=null")
        files = pair_files(pairs_run(str(source), cfg.storage))
        ds = shuffled_each_epoch(tokenized(files, cfg, str(tiny_llama), limit, swap_labels=False), cfg.seed)
        return [[r["pair_id"] for r in ds.iter_rows()] for _ in range(2)]

    forward, backward = written("forward", rows), written("backward", rows[::-1])
    a, b = order_of(forward, None), order_of(backward, None)
    assert sorted(a[0]) == sorted(b[0]) and len(a[0]) >= 55  # the ingest may quarantine a few
    assert a[0] != sorted(a[0]) and a[0] != a[1]  # shuffled, and anew at the second epoch
    assert a == b
    assert order_of(forward, 25) == order_of(backward, 25)
