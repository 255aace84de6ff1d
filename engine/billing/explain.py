"""`--explain`: which billed intervals hold an invoice line's seconds, and the events that
opened and closed them (docs/design.md §3.4).

A line covers the seconds of one (period, price version); each interval is cut to whole
seconds by the fold's one rounding, so the seconds shown add up the way the line counts
them (before runs merge: a second two intervals share shows under both).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.billing.meter import Interval, seconds_of
from engine.billing.periods import US_PER_S, period_bounds
from engine.billing.price_book import PriceBook


@dataclass(frozen=True, slots=True)
class Held:
    opened_at_us: int
    closed_at_us: int | None
    opened_by: str | None  # None for rows metered before event ids were kept
    closed_by: str | None
    seconds_in_line: int


def line_window(book: PriceBook, period: str, price_version: int) -> tuple[int, int]:
    """[lo, hi) in epoch seconds: the period's seconds the version was in force."""
    lo, hi = period_bounds(period)
    since, until = book.version_bounds(price_version)
    return max(lo, since), hi if until is None else min(hi, until)


def held_in(intervals: Iterable[Interval], lo: int, hi: int, accrued_to_us: int | None
            ) -> list[Held]:
    """The intervals with seconds in [lo, hi). An open one runs to `accrued_to_us` (an open
    invoice) or, if None, to the end of the window (billed to the line's end)."""
    out = []
    for t0, t1, *ids in intervals:
        opened_by, closed_by = [*ids, None, None][:2]
        if t1 is not None:
            end = t1
        elif accrued_to_us is not None:
            end = max(t0, accrued_to_us)
        else:
            end = max(t0, hi * US_PER_S)  # billed to the line's end
        if end == t0:
            continue  # empty: it covers no second
        s0, s1 = seconds_of(t0, end)
        if max(s0, lo) < min(s1, hi):
            out.append(Held(t0, t1, opened_by, closed_by, min(s1, hi) - max(s0, lo)))
    return out
