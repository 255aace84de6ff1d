"""Money is Decimal, exact until the one rounding (docs/design.md §2.7, §3.3 rule 4).

Arithmetic runs in a context that traps any rounding, so an amount is either exact or an
error; `round_money` is the only place billing rounds. `canonical` is the one spelling of a
value that content hashes see ("0.10" and "0.1" hash alike).
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from functools import lru_cache

# Exact arithmetic: any operation that would round raises instead of silently losing money.
EXACT = Context(prec=200, traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow])
# Used only by round_money, where rounding is the point.
_ROUNDING = Context(prec=200, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])
ZERO = Decimal(0)


@lru_cache(maxsize=32)
def _quantum(minor_unit: int) -> Decimal:
    return Decimal(1).scaleb(-minor_unit)


def round_money(amount: Decimal, minor_unit: int) -> Decimal:
    """THE rounding rule of billing: half-up (away from zero on a tie) to the minor unit."""
    return amount.quantize(_quantum(minor_unit), context=_ROUNDING)


def exact_sum(amounts: list[Decimal], start: Decimal = ZERO) -> Decimal:
    total = start
    for amount in amounts:
        total = EXACT.add(total, amount)
    return total


# Equal values share one result, and `normalize` of equal values is one spelling, so the
# cache cannot leak one caller's spelling into another's answer.
@lru_cache(maxsize=1 << 16)  # the same few rates, specs and prices recur on every invoice
def canonical(d: Decimal) -> str:
    """One spelling per value; fixed-point, never exponent."""
    return format(d.normalize(EXACT) if d else ZERO, "f")
