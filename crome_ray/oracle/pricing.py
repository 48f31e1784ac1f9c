"""Dollar cost of oracle calls from token usage. Pure.

Prices are USD per million tokens. Thinking tokens are billed as output; cached input
tokens at the cached rate; Batch API calls at ``batch_discount`` of the online price.
"""

from __future__ import annotations

from crome_ray.config import ModelPrice
from crome_ray.oracle.protocol import Usage


def call_cost(usage: Usage, price: ModelPrice, *, batch: bool = False) -> float:
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    cached_rate = price.cached_input_per_m if price.cached_input_per_m is not None else price.input_per_m
    dollars = (
        uncached * price.input_per_m
        + usage.cached_tokens * cached_rate
        + usage.billed_output_tokens * price.output_per_m
    ) / 1e6
    return dollars * (price.batch_discount if batch else 1.0)


def worst_case_cost(
    input_tokens: int, max_output_tokens: int, price: ModelPrice, *, batch: bool = False
) -> float:
    """What a call can cost at most: every output token used (thinking included), none cached.

    ``max_output_tokens`` bounds thinking plus answer, as Gemini's own limit does.
    """
    return call_cost(Usage(input_tokens=input_tokens, output_tokens=max_output_tokens), price, batch=batch)
