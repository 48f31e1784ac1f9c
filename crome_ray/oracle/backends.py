"""The oracle backend interface and the one registry that makes a backend from ``oracle.backend``.

A backend makes one attempt per ``generate`` call and sorts every failure into an
``OracleError`` kind; retries, quota, the dollar cap and the cache are not its business
(``oracle.client`` and the governor do those for every backend alike).

A backend module registers its class with ``@register_backend(name)``. So that
choosing a backend never imports another one's SDK, ``make_backend`` imports the
module that provides a name only when that name is asked for (``BACKEND_MODULES``). A
new backend is one module plus one line there, and its name in ``OracleConfig.backend``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from crome_ray.oracle.protocol import Answer, OracleRequest

if TYPE_CHECKING:
    from crome_ray.oracle.config import ModelPrice, OracleConfig

# name -> the module whose import registers it
BACKEND_MODULES: dict[str, str] = {
    "gemini": "crome_ray.oracle.gemini",
    "vllm": "crome_ray.oracle.vllm_engine",
    "openai": "crome_ray.oracle.openai_compat",
}


@runtime_checkable
class OracleBackend(Protocol):
    name: str

    @property
    def price(self) -> ModelPrice:
        """What this backend charges per token for the configured model (from ``oracle.prices``)."""
        ...

    async def generate(self, req: OracleRequest) -> Answer:
        """One attempt; raises ``OracleError`` (of a kind) on any failure."""
        ...

    async def check_model(self) -> None:
        """Fail before any paid call if the configured model cannot be used."""
        ...

    async def aclose(self) -> None:
        """Release what the backend opened (HTTP sessions)."""
        ...


BackendFactory = Callable[["OracleConfig", str], OracleBackend]
F = TypeVar("F", bound=Callable[..., OracleBackend])
_registry: dict[str, Callable[..., OracleBackend]] = {}


def register_backend(name: str) -> Callable[[F], F]:
    """Class decorator: ``make_backend`` builds ``cls(config, api_key)`` when ``oracle.backend == name``."""

    def register(factory: F) -> F:
        known = _registry.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (
            factory.__module__,
            factory.__qualname__,
        ):
            raise ValueError(
                f"oracle backend {name!r} is registered already, by {known.__module__}.{known.__qualname__}"
            )
        _registry[name] = factory
        return factory

    return register


def known_backends() -> list[str]:
    return sorted({*BACKEND_MODULES, *_registry})


def make_backend(config: OracleConfig, api_key: str) -> OracleBackend:
    """The backend ``config.backend`` names, built with ``api_key`` (a plain string: it goes
    straight to the backend's client and is kept nowhere else)."""
    name = config.backend
    if name not in _registry and name in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[name])  # registers itself on import
        if name not in _registry:
            raise RuntimeError(f"{BACKEND_MODULES[name]} did not register the oracle backend {name!r}")
    factory = _registry.get(name)
    if factory is None:
        raise ValueError(
            f"oracle.backend {name!r} is not a known backend; known backends: {', '.join(known_backends())}"
        )
    return factory(config, api_key)
