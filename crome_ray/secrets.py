"""Secrets from the environment (or a secret store that exports them), held as SecretStr.

A SecretStr prints as '**********', so a key passed into Ray actors or a config never
shows in logs, reprs or error messages. Only entrypoints read the environment for keys
(through ``oracle.choice.choose_oracle``, which calls ``resolve_api_key``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from crome_ray.errors import CromeError


class MissingSecretError(CromeError, RuntimeError):
    """No key in any of the variables looked at; the message names them."""


def resolve_api_key(
    names: tuple[str, ...] | list[str], what: str = "Gemini API key", environ: Mapping[str, str] | None = None
) -> SecretStr:
    env = os.environ if environ is None else environ
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return SecretStr(value)
    raise MissingSecretError(
        f"no {what}: set one of the environment variables {', '.join(names)} "
        "(on a cluster: in the cluster's environment or secret store, never in a config file)"
    )
