"""One cheap call that checks key, model id and quota before a paid run (``crome-ray oracle probe``).

The model check is free (a metadata call); the probe call asks for one word and at most
8 output tokens, so it costs a fraction of a cent at any listed price.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import SecretStr

from crome_ray.oracle.backends import make_backend
from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.pricing import call_cost
from crome_ray.oracle.protocol import GenerationParams, OracleRequest

PROBE_PROMPT = "Reply with the single word OK."


@dataclass(frozen=True)
class ProbeResult:
    model: str
    text: str
    latency_s: float
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price in the config


def probe(cfg: OracleConfig, api_key: SecretStr) -> ProbeResult:
    """Check the model, then make one tiny call. Raises ``OracleError`` (kind says why) on failure."""

    async def go():
        backend = make_backend(cfg, api_key.get_secret_value())
        try:
            await backend.check_model()
            return await backend.generate(
                OracleRequest(PROBE_PROMPT, params=GenerationParams(max_output_tokens=8))
            )
        finally:
            await backend.aclose()

    answer = asyncio.run(go())
    cost = call_cost(answer.usage, cfg.price()) if cfg.model in cfg.prices else None
    return ProbeResult(
        model=cfg.model,
        text=answer.text.strip(),
        latency_s=answer.latency_s,
        input_tokens=answer.usage.input_tokens,
        output_tokens=answer.usage.billed_output_tokens,
        cost_usd=cost,
    )
