"""One place picks the oracle: which LLM serves a run's calls, which serves what it cannot, with
which keys, and what the user is told; checked before any work starts.

Every job that calls an oracle (the oracle job, the augmentation, the evaluation's rewrites)
has the same three settings: ``oracle`` (the primary), ``fallback`` (a local oracle and the
policy that sends rows to it) and ``no_key`` (what to do when a remote primary has no key).

- ``choose_oracle(cfg, at, environ)`` is what an entrypoint calls before Ray starts, for the
  oracle section at ``at`` of its config: it reads the keys from the environment (never from
  a config file), and with no key for Gemini and ``no_key: local`` it turns that section into
  a local-only run and returns the one line that says so. The returned config is the one to
  run (its fingerprint says a local model wrote the answers).
- ``plan_oracle(cfg, api_key, fallback_key)`` is what a job calls with those keys: the
  ``OraclePlan`` (primary, fallback, the effective policy, the keys). It refuses an oracle
  with no price, since without one the dollar cap cannot hold.
- ``OraclePlan.checked()`` makes one free metadata call: a retired or misspelled model fails
  before anything is spent, or, under a policy that takes fatal errors, hands every call to
  the fallback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, SecretStr

from crome_ray.config import replace_at, section_at
from crome_ray.oracle.config import FallbackConfig, OracleConfig
from crome_ray.oracle.protocol import ErrorKind, OracleError
from crome_ray.secrets import MissingSecretError, resolve_api_key

# the primary's failures that a fallback policy sends to the local oracle
FALLBACK_KINDS: dict[str, frozenset[str]] = {
    "off": frozenset(),
    "on_budget": frozenset({ErrorKind.BUDGET_EXHAUSTED}),
    "on_error": frozenset(
        {ErrorKind.BUDGET_EXHAUSTED, ErrorKind.QUOTA_EXHAUSTED, ErrorKind.RETRYABLE, ErrorKind.FATAL}
    ),
}


class UsesOracle(Protocol):
    """A job config with an oracle: ``OracleJobConfig``, ``AugmentConfig``, ``RewriteSettings``."""

    @property
    def oracle(self) -> OracleConfig: ...

    @property
    def fallback(self) -> FallbackConfig: ...

    @property
    def no_key(self) -> Literal["local", "fail"]: ...

    def model_copy(self, *, update: dict | None = None, deep: bool = False): ...


C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class OraclePlan:
    """Who serves a run's calls. ``policy`` is the effective one: ``off`` when there is no second
    pass (``local_only`` makes the local oracle the primary)."""

    primary: OracleConfig
    api_key: SecretStr
    fallback: OracleConfig | None
    fallback_key: SecretStr
    policy: str
    unavailable: str | None = None  # why the primary was replaced by the fallback, if it was

    @property
    def fallback_kinds(self) -> frozenset[str]:
        """The primary's error kinds that go to the fallback."""
        return FALLBACK_KINDS[self.policy]

    def describe(self) -> str:
        fb = (
            f"; fallback {self.fallback.backend} {self.fallback.model} ({self.policy})"
            if self.fallback
            else ""
        )
        return f"{self.primary.backend} {self.primary.model}{fb}"

    def checked(self) -> OraclePlan:
        """The plan after one free call that checks the primary's model id. Under a policy that
        sends fatal errors to the fallback, an unavailable primary makes the fallback serve
        every call (``unavailable`` says why); otherwise its ``OracleError`` is raised."""
        try:
            check_model(self.primary, self.api_key)
        except OracleError as e:
            if not (e.kind == ErrorKind.FATAL and ErrorKind.FATAL in self.fallback_kinds and self.fallback):
                raise
            return OraclePlan(self.fallback, self.fallback_key, None, self.fallback_key, "off", str(e))
        return self


def plan_oracle(cfg: UsesOracle, api_key: SecretStr, fallback_key: SecretStr | None = None) -> OraclePlan:
    """The plan a job follows with the keys its entrypoint found; refuses an oracle with no price
    (no price, no cap) before anything else."""
    fb_key = fallback_key or SecretStr("")
    if cfg.fallback.policy == "local_only":
        plan = OraclePlan(cfg.fallback.oracle, fb_key, None, fb_key, "off")
    elif cfg.fallback.policy == "off":
        plan = OraclePlan(cfg.oracle, api_key, None, fb_key, "off")
    else:
        plan = OraclePlan(cfg.oracle, api_key, cfg.fallback.oracle, fb_key, cfg.fallback.policy)
    plan.primary.price()
    if plan.fallback is not None:
        plan.fallback.price()
    return plan


@dataclass(frozen=True)
class OracleChoice:
    """What an entrypoint found: the keys (from the environment) and a line for the user, if any."""

    api_key: SecretStr
    fallback_key: SecretStr
    notice: str | None = None


def choose_oracle(cfg: C, at: str = "", environ: Mapping[str, str] | None = None) -> tuple[C, OracleChoice]:
    """(the config to run, the keys and the notice) for the oracle section of ``cfg`` at the
    dotted path ``at`` (``""``: ``cfg`` is the section; ``"augment"``, ``"evaluate.rewrites"``
    in a pipeline), checked like a job checks it before any work.

    With no key for a remote primary: ``no_key: fail`` raises ``MissingSecretError`` (naming
    the variables looked at); ``no_key: local`` makes the fallback's local oracle serve every
    call (``fallback.policy: local_only``) and the notice says so."""
    env = os.environ if environ is None else environ
    section: UsesOracle = section_at(cfg, at)
    fb = section.fallback.oracle
    fallback_key = _local_key(fb, env)
    primary = fb if section.fallback.policy == "local_only" else section.oracle
    notice = None
    if primary.local:
        key = _local_key(primary, env)
    else:
        try:
            key = resolve_api_key(section.oracle.api_key_env, environ=env)
        except MissingSecretError:
            if section.no_key == "fail":
                raise
            key, notice = SecretStr(""), local_oracle_notice(section.oracle.api_key_env, fb)
            local = section.fallback.model_copy(update={"policy": "local_only"})
            section = section.model_copy(update={"fallback": local})
    plan_oracle(section, key, fallback_key)
    return replace_at(cfg, at, section), OracleChoice(key, fallback_key, notice)  # type: ignore[arg-type]


def local_oracle_notice(names: tuple[str, ...], oracle: OracleConfig) -> str:
    """The line that says the local model is the oracle, and what it is worth as one."""
    from crome_ray.models import BUILTIN, builtin_name

    spec = BUILTIN.get(builtin_name(oracle.model) or "")
    what = f"{spec.name}; {spec.as_oracle}" if spec and spec.as_oracle else oracle.model
    return (
        f"no key in {' / '.join(names)}: the oracle is the local model {oracle.model} "
        f"on vLLM ({what}); set a key for Gemini, or fallback.oracle.model for a larger local model"
    )


def check_model(oracle: OracleConfig, api_key: SecretStr) -> None:
    """One free metadata call: a retired or misspelled model fails before anything is spent."""
    from crome_ray.oracle.backends import make_backend

    async def check() -> None:
        backend = make_backend(oracle, api_key.get_secret_value())
        try:
            await backend.check_model()
        finally:
            await backend.aclose()

    asyncio.run(check())


def _local_key(oracle: OracleConfig, env: Mapping[str, str]) -> SecretStr:
    """A local oracle's key: an OpenAI-compatible server's, if one is set (``vllm serve`` checks
    none unless told to); a vLLM engine needs none."""
    if oracle.backend != "openai":
        return SecretStr("")
    try:
        return resolve_api_key(oracle.api_key_env, what="API key", environ=env)
    except MissingSecretError:
        return SecretStr("")
