"""Reward-model mechanics without Ray: encoding, batching, LoRA vs full fine-tuning, export."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from crome_ray.config import load_config
from crome_ray.storage import Folder
from crome_ray.train.batches import PairEncoder, PairRow, collate, length_grouped, rewards, rows_of
from crome_ray.train.config import TrainConfig
from crome_ray.train.export import PROBE, export_model, score_texts
from crome_ray.train.loop import LocalRuntime, cue_shift, train_worker
from crome_ray.train.model import load_reward_model, score_head_names
from crome_ray.train.score import RewardScorer
from crome_ray.tune.config import METRIC_MODES


def uf_rows(samples, n, start=0):
    with open(samples / "ultrafeedback" / "train_1k.jsonl") as f:
        rows = [json.loads(line) for line in f][start : start + n]
    return {
        "prompt": np.array([r["prompt"] for r in rows], dtype=object),
        "chosen": np.array([r["chosen"] for r in rows], dtype=object),
        "rejected": np.array([r["rejected"] for r in rows], dtype=object),
        "label": np.array(["chosen"] * len(rows), dtype=object),
    }


def encoded(path, samples, n, max_length=96, ties=0):
    rm = load_reward_model(path, finetune="full")
    batch = uf_rows(samples, n)
    if ties:
        batch["label"][:ties] = "tie"
    return rows_of(PairEncoder(rm.tokenizer, max_length, is_decoder=rm.is_decoder).encode_pairs(batch))


def config(**over) -> TrainConfig:
    base = {"max_length": 96, "batch_size": 4, "log_every": 1, "checkpoint_every": 1000, "lora.r": 4}
    base.update(over)
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in base.items()])


# --- encoding and batches -------------------------------------------------------------------


def test_a_decoder_pair_goes_through_the_chat_template_and_keeps_its_end_when_too_long(tiny_llama):
    rm = load_reward_model(tiny_llama, finetune="full")
    enc = PairEncoder(rm.tokenizer, 48, is_decoder=rm.is_decoder)
    short = enc.encode("Hi?", "Hello.")
    text = rm.tokenizer.decode(short.ids)
    assert not short.truncated and "<|im_start|>user\nHi?<|im_end|>" in text and "assistant\nHello." in text
    long = enc.encode("word " * 200, "the answer ends here.")
    assert long.truncated and len(long.ids) == 48
    assert rm.tokenizer.decode(long.ids).endswith("the answer ends here.<|im_end|>\n")


def test_an_encoder_pair_is_a_sentence_pair_that_keeps_its_cls_when_too_long(tiny_bert):
    rm = load_reward_model(tiny_bert, finetune="full")
    assert not rm.is_decoder
    enc = PairEncoder(rm.tokenizer, 32, is_decoder=rm.is_decoder)
    long = enc.encode("question " * 100, "answer " * 100)
    assert long.truncated and len(long.ids) == 32 and long.ids[0] == rm.tokenizer.cls_token_id
    assert rm.tokenizer.sep_token_id in long.ids[1:-1]  # both texts kept a share


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_a_huge_text_is_cut_before_the_tokenizer_and_encodes_as_if_read_whole(tiny_llama, tiny_bert, kind):

    rm = load_reward_model(tiny_llama if kind == "decoder" else tiny_bert, finetune="full")
    seen: list[int] = []
    real = rm.tokenizer.__class__.__call__

    def spy(tok, *texts, **kw):
        seen.append(sum(len(t) for t in texts if isinstance(t, str)))
        return real(tok, *texts, **kw)

    enc = PairEncoder(rm.tokenizer, 64, is_decoder=rm.is_decoder)
    whole = PairEncoder(rm.tokenizer, 64, is_decoder=rm.is_decoder)
    whole.max_chars = 10**9  # never cut: the reference
    words = " ".join(f"w{i} lorem ipsum" for i in range(600))  # ~9k characters
    prompt, answer = ("Q? " + words, "the answer ends here.") if kind == "decoder" else ("Q? " + words, words)
    expected = whole.encode(prompt, answer)
    rm.tokenizer.__class__.__call__ = spy
    try:
        got = enc.encode(prompt, answer)
    finally:
        rm.tokenizer.__class__.__call__ = real
    assert got == expected and got.truncated and len(got.ids) == 64
    assert seen and max(seen) <= 2 * 8 * 64 + 16  # the tokenizer read one kilobyte or two, not 9k characters
    if kind == "encoder":
        tokens = rm.tokenizer.convert_ids_to_tokens(got.ids)
        assert tokens[:3] == ["[CLS]", "q", "?"] and tokens[tokens.index("[SEP]") + 1] == "w"  # both starts


def test_length_grouping_yields_every_row_once_in_batches_of_similar_length():
    rng = random.Random(3)
    rows = [PairRow(np.zeros(n), np.zeros(n), False, n) for n in (rng.randint(5, 500) for _ in range(103))]
    batches = list(length_grouped(iter(rows), 8, buffer_batches=4, rng=random.Random(0)))
    assert sorted(id(r) for b in batches for r in b) == sorted(id(r) for r in rows)
    assert sum(len(b) < 8 for b in batches) <= 4  # one short batch per buffer (of 32 rows) at most

    def spread(bs):
        return np.mean([max(r.length for r in b) - min(r.length for r in b) for b in bs])

    in_order = [rows[i : i + 8] for i in range(0, len(rows), 8)]
    assert spread(batches) < 0.4 * spread(in_order)  # about 1/4 of a random batch's spread


def test_a_batch_puts_a_sides_first_and_padding_does_not_change_a_reward(tiny_llama, samples):
    rm = load_reward_model(tiny_llama, finetune="full")
    rows = encoded(tiny_llama, samples, 4, max_length=64)
    batch = collate(rows, rm.tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 8 and batch.input_ids.shape[1] % 8 == 0
    assert batch.tokens == int(batch.attention_mask.sum())
    rm.model.eval()
    with torch.no_grad():
        r_a, r_b = rewards(rm.model, batch)
        for i, row in enumerate(rows):  # each sequence alone, no padding at all
            alone = rm.model(input_ids=torch.as_tensor(row.ids_a[None].astype(np.int64))).logits.item()
            assert r_a[i].item() == pytest.approx(alone, abs=1e-5)
            alone_b = rm.model(input_ids=torch.as_tensor(row.ids_b[None].astype(np.int64))).logits.item()
            assert r_b[i].item() == pytest.approx(alone_b, abs=1e-5)


# --- training -----------------------------------------------------------------------------


def test_with_lora_the_base_weights_stay_and_the_adapter_and_score_head_move(tiny_llama, samples):
    rows = encoded(tiny_llama, samples, 16)
    cfg = config(model=str(tiny_llama), **{"optim.lr": 1e-2})
    torch.manual_seed(cfg.seed)  # as train_worker does: the same random score head
    probe = load_reward_model(tiny_llama, finetune="lora", lora=cfg.lora)
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    trainable = {n for n, p in probe.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and set(score_head_names(probe.model)) <= trainable
    assert not any("embed_tokens" in n or "mlp" in n for n in trainable)

    kept: dict = {}
    runtime = LocalRuntime(rows)
    train_worker(cfg, str(tiny_llama), runtime, total_steps=6, export=lambda rm: kept.setdefault("rm", rm))
    after = dict(kept["rm"].model.named_parameters())
    for name, old in before.items():
        moved = not torch.equal(old, after[name].detach())
        assert moved == (name in trainable), f"{name}: moved={moved}, trainable={name in trainable}"
    assert len(runtime.reports) == 6 and runtime.reports[-1]["step"] == 6


class Stopped(Exception):
    pass


class StopsAfter(LocalRuntime):
    """A worker that dies right after reporting step ``at`` (its checkpoint kept)."""

    def __init__(self, *args, at: int, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        if metrics["step"] == self.at:
            raise Stopped


LEARNED = ("loss", "loss_bt", "pair_accuracy", "lr")


def test_a_run_stopped_at_a_checkpoint_and_resumed_goes_on_exactly_as_one_that_did_not_stop(
    tiny_llama, samples, tmp_path
):
    """10 pairs in batches of 4: passes over the data end mid-way and wrap, and length grouping
    draws from the worker's random stream, as does dropout (0.3 here): the resumed run must take
    up the data where it was and each random stream where it was (seen failing without either)."""
    rows = encoded(tiny_llama, samples, 10)
    cfg = config(model=str(tiny_llama), checkpoint_every=3, **{"optim.lr": 1e-2, "lora.dropout": 0.3})
    whole = LocalRuntime(rows)
    train_worker(cfg, str(tiny_llama), whole, total_steps=8)
    folder = str(tmp_path / "checkpoints")
    with pytest.raises(Stopped):
        train_worker(cfg, str(tiny_llama), StopsAfter(rows, checkpoints=folder, at=5), total_steps=8)
    resumed = LocalRuntime(rows, checkpoints=folder)  # a new worker: from the step-3 checkpoint
    train_worker(cfg, str(tiny_llama), resumed, total_steps=8)
    assert [r["step"] for r in resumed.reports] == [4, 5, 6, 7, 8]
    assert {r["started_at_step"] for r in resumed.reports} == {3}
    for got, want in zip(resumed.reports, whole.reports[3:], strict=True):
        assert got["step"] == want["step"]
        for k in LEARNED:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), (got["step"], k)
    # the losses moved: the comparison is not of a model that learned nothing
    assert len({round(r["loss"], 6) for r in whole.reports}) > 4


def test_full_fine_tuning_moves_the_base_weights(tiny_llama, samples):
    rows = encoded(tiny_llama, samples, 8)
    cfg = config(model=str(tiny_llama), finetune="full", **{"optim.lr": 1e-3})
    base = load_reward_model(tiny_llama, finetune="full").model
    kept: dict = {}
    train_worker(
        cfg, str(tiny_llama), LocalRuntime(rows), total_steps=3, export=lambda rm: kept.setdefault("rm", rm)
    )
    after = dict(kept["rm"].model.named_parameters())
    emb = "model.embed_tokens.weight"
    assert not torch.equal(base.get_parameter(emb), after[emb].detach())


def test_training_on_ties_alone_pulls_their_reward_gap_toward_zero(tiny_llama, samples):
    rows = encoded(tiny_llama, samples, 8, ties=8)
    cfg = config(
        model=str(tiny_llama),
        finetune="full",
        **{"optim.lr": 3e-3, "optim.warmup_ratio": 0, "optim.schedule": "constant"},
    )
    runtime = LocalRuntime(rows, eval=rows)
    # the first evaluation sees the untrained model; compare its |Δ| with the last
    first = train_worker(cfg.model_copy(update={"eval_every": 1}), str(tiny_llama), runtime, total_steps=1)
    runtime2 = LocalRuntime(rows, eval=rows)
    last = train_worker(cfg, str(tiny_llama), runtime2, total_steps=40)
    assert first["eval_ties"] == 8 and last["eval_tie_abs_delta"] < 0.5 * first["eval_tie_abs_delta"]
    assert last["eval_loss_tie"] < first["eval_loss_tie"]


def test_the_robustness_probe_measures_the_cues_accuracy_and_reward_shift(tiny_llama, samples):
    from crome_ray.cue import plant_cue
    from crome_ray.train.dataset import with_cue_variants
    from crome_ray.train.loop import evaluate

    cue = "## Summary\nThis answer is complete, accurate and helpful."
    rm = load_reward_model(tiny_llama, finetune="full")
    batch = uf_rows(samples, 10)
    batch["label"][:2] = "tie"  # ties get no cued copy
    batch["pair_id"] = np.array([f"{i:08x}" for i in range(10)], dtype=object)
    both = with_cue_variants(batch, cue, "start")
    assert list(both["variant"]).count(1) == 8 and len(both["variant"]) == 18
    enc = PairEncoder(rm.tokenizer, 96, is_decoder=rm.is_decoder)
    rows = rows_of({**enc.encode_pairs(both), "variant": both["variant"]})
    got = evaluate(rm.model, LocalRuntime(rows, eval=rows), config(), rm.tokenizer.pad_token_id, None)
    # by hand, with the scorer: the 8 preference pairs, clean and with the cue on the rejected side
    prompts, chosen, rejected = batch["prompt"][2:], batch["chosen"][2:], batch["rejected"][2:]
    rc = np.array(score_texts(rm.model, enc, list(zip(prompts, chosen, strict=True))))
    rr = np.array(score_texts(rm.model, enc, list(zip(prompts, rejected, strict=True))))
    cued = [plant_cue(str(r), cue, "start") for r in rejected]
    rq = np.array(score_texts(rm.model, enc, list(zip(prompts, cued, strict=True))))
    assert got["eval_pairs"] == 8 and got["eval_accuracy"] == pytest.approx(np.mean(rc > rr))
    assert got["eval_cue_accuracy"] == pytest.approx(np.mean(rc > rq))
    spread = np.concatenate([rc, rr]).std()
    assert got["eval_cue_shift"] == pytest.approx(np.mean(rq - rr) / spread, rel=1e-3)
    assert got["eval_cue_shift"] != 0  # the cue moves an untrained model's reward
    assert got["eval_cue_abs_shift"] == abs(got["eval_cue_shift"])
    assert set(METRIC_MODES) - {"eval_loss_tie", "eval_tie_abs_delta"} <= set(got)  # what a sweep may judge
    # a model that scores every answer alike has no spread: its shift is undefined, not 0
    assert math.isnan(cue_shift(rb=4.0, r1=8.0, r2=8.0, n_pref=4, rb_cue=6.0, n_cue=4))  # every reward 1
    plain = evaluate(
        rm.model, LocalRuntime(rows[:10], eval=rows[:10]), config(), rm.tokenizer.pad_token_id, None
    )
    assert "eval_cue_accuracy" not in plain and plain["eval_accuracy"] == got["eval_accuracy"]


def test_the_probe_plants_the_cue_where_the_models_truncation_keeps_it(tiny_llama, tiny_bert, samples):
    from crome_ray.config import StorageConfig
    from crome_ray.train.dataset import encode_batch

    batch = {**uf_rows(samples, 2), "pair_id": np.array(["0a", "0b"], dtype=object)}
    cue = "CUE-MARKER"
    storage = StorageConfig().model_dump_json()
    for path in (tiny_llama, tiny_bert):  # a decoder keeps the end of a long text, an encoder the start
        out = encode_batch(dict(batch), str(path), storage, 32, cue, "auto")
        rm = load_reward_model(path, finetune="full")
        cue_ids = rm.tokenizer(cue, add_special_tokens=False)["input_ids"]
        cued = [ids for ids, v in zip(out["ids_b"], out["variant"], strict=True) if v == 1]
        assert len(cued) == 2
        for ids in cued:  # the long answer is cut to 32 tokens, and the cue is still there
            text = rm.tokenizer.decode(ids)
            assert "CUE" in text.replace(" ", "").upper(), (path, text, cue_ids)


# --- export and score -----------------------------------------------------------------------


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_the_exported_model_scores_like_the_model_at_the_end_of_training(
    tiny_llama, samples, tmp_path, finetune
):
    rows = encoded(tiny_llama, samples, 8)
    cfg = config(model=str(tiny_llama), finetune=finetune, **{"optim.lr": 1e-2})
    run = Folder.from_uri(str(tmp_path / "run"))
    run.fs.makedirs(run.path, exist_ok=True)
    live: dict = {}

    def export(rm):
        enc = PairEncoder(rm.tokenizer, cfg.max_length, is_decoder=rm.is_decoder)
        live["scores"] = score_texts(rm.model, enc, PROBE)
        export_model(rm, run, cfg.max_length)

    train_worker(cfg, str(tiny_llama), LocalRuntime(rows), total_steps=4, export=export)
    probe = json.loads((tmp_path / "run" / "model" / "probe.json").read_text())
    assert [p["score"] for p in probe] == pytest.approx(live["scores"], abs=1e-5)
    assert len(set(round(s, 4) for s in live["scores"])) > 1  # a model that says one number tests nothing

    # plain transformers, nothing of ours
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    text = tok.apply_chat_template(
        [{"role": "user", "content": PROBE[0][0]}, {"role": "assistant", "content": PROBE[0][1]}],
        tokenize=False,
    )
    with torch.no_grad():
        value = plain(**tok(text, return_tensors="pt", add_special_tokens=False)).logits.item()
    assert value == pytest.approx(live["scores"][0], abs=1e-4)

    prompts, responses = [p for p, _ in PROBE], [r for _, r in PROBE]
    assert RewardScorer(str(tmp_path / "run")).score(prompts, responses) == pytest.approx(
        live["scores"], abs=1e-4
    )
    if finetune == "lora":
        adapter = RewardScorer(str(tmp_path / "run" / "adapter"))
        assert adapter.score(prompts, responses) == pytest.approx(live["scores"], abs=1e-4)
    else:
        assert not (tmp_path / "run" / "adapter").exists()


def test_the_score_api_refuses_mismatched_inputs(tiny_rm):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RewardScorer(str(tiny_rm)).score(["a", "b"], ["c"])


@pytest.fixture()
def tiny_rm(tiny_llama, tmp_path):
    """The tiny Llama with a (random) reward head, saved as a reward model."""
    rm = load_reward_model(tiny_llama, finetune="full")
    rm.model.save_pretrained(tmp_path / "rm")
    rm.tokenizer.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


def test_scoring_a_model_without_a_reward_head_is_refused(tiny_llama):
    from crome_ray.models import ModelError

    with pytest.raises(ModelError, match="no trained reward head"):
        RewardScorer(str(tiny_llama))


def test_crome_ray_score_rates_pairs_and_reports_their_accuracy(tiny_rm, samples, tmp_path):
    from typer.testing import CliRunner

    from crome_ray.cli import app

    pairs = tmp_path / "pairs.jsonl"
    rows = uf_rows(samples, 6)
    with open(pairs, "w") as f:
        for p, c, r in zip(rows["prompt"], rows["chosen"], rows["rejected"], strict=True):
            f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(
        app,
        ["score", "--model", str(tiny_rm), "--input", str(pairs), "--output", str(out), "--max-length", "64"],
    )
    assert res.exit_code == 0, res.output
    assert "scored 6 pairs" in res.output and "pair accuracy" in res.output
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    scorer = RewardScorer(str(tiny_rm), max_length=64)
    expected = scorer.score(list(rows["prompt"]), list(rows["chosen"]))
    assert table.column("score_chosen").to_pylist() == pytest.approx(expected, abs=1e-5)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    res = CliRunner().invoke(app, ["score", "--model", str(tiny_rm), "--input", str(bad)])
    assert res.exit_code == 1 and "needs a prompt column" in res.output
    res = CliRunner().invoke(app, ["score", "--model", str(tmp_path / "nowhere"), "--input", str(pairs)])
    assert res.exit_code == 1 and "cannot load the model" in res.output


@pytest.mark.parametrize("setting", ["gradient_checkpointing=true", "precision=bf16"])
def test_gradient_checkpointing_and_bf16_autocast_train_too(tiny_llama, samples, setting):
    rows = encoded(tiny_llama, samples, 8)
    key, value = setting.split("=")
    cfg = config(model=str(tiny_llama), **{key: value, "optim.lr": 1e-2})
    runtime = LocalRuntime(rows, eval=rows)
    last = train_worker(cfg, str(tiny_llama), runtime, total_steps=3)
    assert all(np.isfinite(r["loss"]) for r in runtime.reports) and last["eval_pairs"] == 8
    assert runtime.reports[0]["loss"] != runtime.reports[-1]["loss"]
