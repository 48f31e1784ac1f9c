"""The shared base of every job's config: frozen models, storage, fingerprints, and the loader
of YAML files plus dotted command-line overrides.

Each job's config lives beside its job (``data/config.py``, ``oracle/config.py``,
``augment/config.py``, ``train/config.py``, ``evaluate/config.py``, ``tune/config.py``,
``pipeline/config.py``), built from nested sub-configs on the ``Frozen`` base here. They are
pydantic models (frozen, unknown keys forbidden) rather than plain dataclasses because
pydantic already does what a config loader needs: type coercion from YAML/CLI strings, and
errors that name the field and the allowed values. ``ConfigError`` re-words those errors
into one line per field.

Loading order: class defaults < YAML file < ``key.sub=value`` overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from crome_ray.errors import CromeError


class ConfigError(CromeError, ValueError):
    """A configuration problem; the message names the field and what is allowed."""


def _safe_run_name(v: str | None) -> str | None:
    if v is not None and (not v or "/" in v or v in (".", "..")):
        raise ValueError("must be a non-empty name without '/'")
    return v


RunName = Annotated[str | None, AfterValidator(_safe_run_name)]
"""A run folder name: one path segment (every job config's ``run_name``)."""


def _distinct_seeds(v: list[int] | None) -> list[int] | None:
    if v is not None and len(set(v)) != len(v):
        raise ValueError(f"each seed once: {v}")
    return v


Seeds = Annotated[list[int] | None, AfterValidator(_distinct_seeds)]
"""Training seeds, each once (the evaluation's and the pipeline's ``seeds``)."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class StorageConfig(Frozen):
    """Where run folders live."""

    root: str = Field(
        "runs",
        description="Local folder, s3://bucket/prefix or gs://bucket/prefix: where run folders are made.",
    )
    endpoint_url: str | None = Field(
        None,
        description=(
            "For s3://, an S3-compatible endpoint (MinIO, moto, R2...); unset: AWS_ENDPOINT_URL or AWS. "
            "For gs://, a GCS emulator, used without credentials; unset: STORAGE_EMULATOR_HOST or "
            "Google Cloud Storage, with google-auth's default credentials."
        ),
    )
    region: str | None = Field(
        None, description="S3 region; unset: the AWS default chain. Not used for gs://."
    )
    shared: bool = Field(
        False,
        description=(
            "A local root that is the same shared filesystem (NFS, EFS, Filestore...) on every node of the "
            "Ray cluster. Unset, a job refuses a local root on a cluster of more than one node (each node "
            "would write its part of a run to its own disk); set, it goes on and its writers run anywhere."
        ),
    )

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a folder path, s3://bucket/prefix or gs://bucket/prefix, not empty")
        return v.rstrip("/") if v not in ("/",) else v

    @model_serializer(mode="wrap")
    def _shared_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``shared`` appears in a dump only when set: every config dumped (manifests, the
        fingerprints that dump a default ``StorageConfig()``) reads as it did before it existed."""
        out = handler(self)
        if not self.shared:
            out.pop("shared", None)
        return out


C = TypeVar("C", bound=Frozen)


def config_fingerprint(*parts: BaseModel) -> str:
    return digest([p.model_dump(mode="json") for p in parts])


def digest(dumps: list[dict[str, Any]]) -> str:
    payload = json.dumps(dumps, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"source.limit=100"`` -> (["source", "limit"], 100). Values are read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return [k.strip() for k in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type[Frozen]) -> dict:
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides:
        keys, value = parse_override(text)
        _check_keys(cls, keys)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return out


def _check_keys(cls: type[BaseModel], keys: list[str]) -> None:
    """Name unknown override keys with the known ones (and a close match)."""
    model: type[BaseModel] | None = cls
    for depth, key in enumerate(keys):
        if model is None:
            raise ConfigError(f"{'.'.join(keys[:depth])} is a value, not a section")
        fields = model.model_fields
        if key not in fields:
            where = ".".join(keys[:depth]) or "the top level"
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {'.'.join(keys[: depth + 1])!r}{hint}; "
                f"known keys at {where}: {', '.join(fields)}"
            )
        model = _section_model(fields[key].annotation)


def _section_model(ann: Any) -> type[BaseModel] | None:
    """The config section behind a field's type: the model itself, or the model of an optional
    section (``SweepSettings | None``, set by an override like ``sweep.tie_weights=...``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def section_at(cfg: BaseModel, at: str) -> Any:
    """The section of ``cfg`` at the dotted path ``at`` (``""``: ``cfg`` itself)."""
    for key in filter(None, at.split(".")):
        cfg = getattr(cfg, key)
    return cfg


def replace_at(cfg: C, at: str, value: BaseModel) -> C:
    """``cfg`` with its section at the dotted path ``at`` replaced by ``value`` (``""``: ``value``),
    every section above it copied with the change: how a resolved section goes back into a
    nested config (the pipeline's ``augment``, its ``evaluate.rewrites``)."""
    if not at:
        return value  # type: ignore[return-value]
    head, _, rest = at.partition(".")
    return cfg.model_copy(update={head: replace_at(getattr(cfg, head), rest, value)})


def build_config(cls: type[C], data: dict[str, Any] | None = None) -> C:
    try:
        return cls.model_validate(data or {})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            lines.append(f"{loc}: {err['msg']}{got}")
        raise ConfigError(f"invalid {cls.__name__}:\n  " + "\n  ".join(lines)) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Defaults, then the YAML file (if any), then ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return build_config(cls, with_section_defaults(cls, apply_overrides(data, list(overrides), cls)))


def with_section_defaults(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` where it gives part of a section whose default differs from its class's own
    defaults, with the rest of that default kept: in a pipeline, ``evaluate.limit=4`` keeps the
    evaluation's models and ``source.limit=10`` keeps ``format: auto``. Without this a partial
    section would be built from its class's defaults alone."""
    out = dict(data)
    for name, field in cls.model_fields.items():
        given, section = out.get(name), _section_model(field.annotation)
        if section is None or not isinstance(given, dict):
            continue
        default = field.get_default(call_default_factory=True)
        base = (
            {}
            if not isinstance(default, BaseModel)
            else default.model_dump(mode="json", exclude_defaults=True)
        )
        out[name] = with_section_defaults(section, _merged(base, given))
    return out


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over ``base``, section by section (a value given replaces, a section merges)."""
    out = dict(base)
    for k, v in given.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
