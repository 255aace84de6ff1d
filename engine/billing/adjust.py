"""Adjustments: what a late report changed in finalised periods (docs/design.md §3.4).

One rule for the writer (at a period close: lines as billed vs lines now) and for the
query's open invoice (what was billed so far vs lines now): every (period, instance,
version) whose amount differs gives `recomputed - finalised`; a line that appears or
vanishes counts as 0 on the other side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from engine.billing.money import EXACT, ZERO
from engine.billing.rate import InvoiceLine, LineKey


@dataclass(frozen=True, slots=True)
class AdjustmentLine:
    billed_in: str  # the open period whose invoice carries this line
    period: str  # the finalised period it corrects
    account: str
    instance_id: str
    price_version: int
    currency: str
    minor_unit: int
    finalised_amount: Decimal
    recomputed_amount: Decimal
    amount: Decimal  # recomputed_amount - finalised_amount
    corrects: tuple[str, ...]  # ids of the late events that caused it


def adjust(billed: Mapping[LineKey, Decimal], recomputed: Mapping[LineKey, Decimal], *,
           billed_in: str, currency: str, minor_unit: int, corrects: Sequence[str] = ()
           ) -> list[AdjustmentLine]:
    """Adjustment lines, billed in `billed_in`, for every key whose amount changed."""
    out: list[AdjustmentLine] = []
    for key in sorted(billed.keys() | recomputed.keys()):
        period, account, instance_id, version = key
        if period >= billed_in:
            raise ValueError(f"adjustment for {period} cannot be billed in {billed_in}")
        before, after = billed.get(key, ZERO), recomputed.get(key, ZERO)
        delta = EXACT.subtract(after, before)
        if delta == 0:
            continue
        out.append(AdjustmentLine(
            billed_in=billed_in, period=period, account=account, instance_id=instance_id,
            price_version=version, currency=currency, minor_unit=minor_unit,
            finalised_amount=before, recomputed_amount=after, amount=delta,
            corrects=tuple(corrects)))
    return out


def adjustments(finalised_lines: Iterable[InvoiceLine], recomputed_lines: Iterable[InvoiceLine],
                *, billed_in: str, corrects: Sequence[str] = (),
                periods: Iterable[str] | None = None) -> list[AdjustmentLine]:
    """Adjustment lines from an instance's lines as finalised and as recomputed.

    `periods` are the finalised periods under correction (default: those of the finalised
    lines; pass them explicitly when a period had no lines before the late report).
    """
    finalised = list(finalised_lines)
    scope = set(periods) if periods is not None else {x.period for x in finalised}
    fin = [x for x in finalised if x.period in scope]
    rec = [x for x in recomputed_lines if x.period in scope]
    units = {(x.currency, x.minor_unit) for x in fin + rec}
    if not units:
        return []
    if len(units) > 1:
        raise ValueError(f"currency changed under finalised lines: {sorted(units)}")
    ((currency, minor_unit),) = units
    return adjust({x.key: x.amount for x in fin}, {x.key: x.amount for x in rec},
                  billed_in=billed_in, currency=currency, minor_unit=minor_unit,
                  corrects=corrects)
