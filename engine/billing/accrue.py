"""Open periods at query time (docs/design.md §3.4): lines accrued up to `as_of`, and the
adjustments pending for closed periods, which the next close will finalise the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal

from engine.billing.adjust import AdjustmentLine, adjust
from engine.billing.invoice import Invoice, invoice_for
from engine.billing.periods import US_PER_S, next_period, period_bounds, period_of, periods_between
from engine.billing.price_book import PriceBook
from engine.billing.rate import InvoiceLine, LineKey
from engine.billing.usage import Usage


def accrued_lines(usages: Iterable[Usage], book: PriceBook, as_of_us: int,
                  periods: Collection[str]) -> list[InvoiceLine]:
    """Lines in `periods`, of intervals cut at `as_of` (those still open run to it)."""
    return [x for u in usages for x in u.accrued(as_of_us, book) if x.period in periods]


def billed_periods(usage: Usage, closed: str) -> list[str]:
    """The closed periods that can hold a finalised line or adjustment of the instance: its
    intervals only ever close, so none is before the first one began."""
    if not usage.intervals:
        return []
    first = period_of(min(iv[0] for iv in usage.intervals) // US_PER_S)
    return periods_between(first, closed)


def pending(candidates: Iterable[Usage], book: PriceBook, closed: str,
            billed: Mapping[LineKey, Decimal], as_of_us: int) -> list[AdjustmentLine]:
    """What the candidates' closed periods come to now (open intervals billed on past the
    close, as at a close) minus what was billed for them so far, billed in the first open
    period. `billed` holds the candidates' finalised amounts plus adjustments since."""
    closed_end = period_bounds(closed)[1]
    horizon = max(as_of_us, closed_end * US_PER_S + 1)
    recomputed = {x.key: x.amount for u in candidates
                  for x in u.lines(u.intervals, horizon, book)
                  if x.period <= closed}
    return adjust(billed, recomputed, billed_in=next_period(closed), currency=book.currency,
                  minor_unit=book.minor_unit)


def open_invoices(account: str, lines: list[InvoiceLine], adjustments: list[AdjustmentLine]
                  ) -> list[Invoice]:
    """The account's open invoices: one per period with lines, and the first open period's
    (which carries the pending adjustments) even if it has none."""
    periods = {x.period for x in lines} | {a.billed_in for a in adjustments}
    return [invoice_for(account, p, lines, adjustments) for p in sorted(periods)]
