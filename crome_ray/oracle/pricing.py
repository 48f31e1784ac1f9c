"""Dollar cost of oracle calls from token usage, in integer micro-dollars. Pure.

Money is held as whole micro-dollars (µ$, ``int``) from the config's cap to the ledger, so
"spend <= cap" is exact integer arithmetic, never float rounding. Prices are USD per
million tokens, which is micro-dollars per token; a call's cost is computed exactly
(``Decimal``) and rounded *up* to a whole micro-dollar, so what we count is never less
than what the provider bills, and a call that used fewer tokens than its worst case
never costs more than it (rounding up is monotone).

Thinking tokens are billed as output; cached input tokens at the cached rate; Batch API
calls at ``batch_discount`` of the online price. Dollars as ``float`` are for display only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from crome_ray.oracle.config import ModelPrice
from crome_ray.oracle.protocol import Usage

MICROS_PER_USD = 1_000_000


def _decimal(value: Decimal | int | str | float) -> Decimal:
    if isinstance(value, Decimal):
        return value
    # a float is read as the shortest decimal that prints as it (0.3 -> "0.3"): the number its writer meant
    return Decimal(repr(value) if isinstance(value, float) else value)


def usd_to_micros(usd: Decimal | int | str | float, *, round_up: bool) -> int:
    """Whole micro-dollars. Round a cap down and a cost or an allowance up: both err on the safe side."""
    exact = _decimal(usd) * MICROS_PER_USD
    return math.ceil(exact) if round_up else math.floor(exact)


def micros_to_usd(micros: int) -> float:
    """For display and reports only; arithmetic stays in micro-dollars."""
    return micros / MICROS_PER_USD


@dataclass(frozen=True)
class _Rates:
    """Micro-dollars per token times ``scale``, as integers: exact, and cheap per call."""

    uncached: int
    cached: int
    output: int
    scale: int


_rates_of: dict[tuple[int, bool], tuple[ModelPrice, _Rates]] = {}


def _rates(price: ModelPrice, *, batch: bool) -> _Rates:
    known = _rates_of.get((id(price), batch))
    if known is not None and known[0] is price:
        return known[1]
    factor = _decimal(price.batch_discount) if batch else Decimal(1)
    cached = price.cached_input_per_m if price.cached_input_per_m is not None else price.input_per_m
    exact = [_decimal(r) * factor for r in (price.input_per_m, cached, price.output_per_m)]
    digits = max(max(-r.as_tuple().exponent, 0) for r in exact)
    scale = 10**digits
    rates = _Rates(*(int(r * scale) for r in exact), scale=scale)
    if len(_rates_of) > 256:
        _rates_of.clear()
    _rates_of[(id(price), batch)] = (price, rates)  # the price is kept, so its id is not reused
    return rates


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def call_cost_micros(usage: Usage, price: ModelPrice, *, batch: bool = False) -> int:
    r = _rates(price, batch=batch)
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    total = uncached * r.uncached + usage.cached_tokens * r.cached + usage.billed_output_tokens * r.output
    return _ceil_div(total, r.scale)


def worst_case_micros(
    input_tokens: int, max_output_tokens: int, price: ModelPrice, *, batch: bool = False
) -> int:
    """What a call can cost at most: every output token used (thinking included), every input
    token at the dearer of the cached and uncached rates.

    ``max_output_tokens`` bounds thinking plus answer, as Gemini's own limit does.
    """
    r = _rates(price, batch=batch)
    return _ceil_div(input_tokens * max(r.uncached, r.cached) + max_output_tokens * r.output, r.scale)


def call_cost(usage: Usage, price: ModelPrice, *, batch: bool = False) -> float:
    """The cost in dollars, for display (``call_cost_micros`` is the exact figure)."""
    return micros_to_usd(call_cost_micros(usage, price, batch=batch))


def worst_case_cost(
    input_tokens: int, max_output_tokens: int, price: ModelPrice, *, batch: bool = False
) -> float:
    return micros_to_usd(worst_case_micros(input_tokens, max_output_tokens, price, batch=batch))
