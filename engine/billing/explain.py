"""`--explain`: which billed intervals hold an invoice line's seconds, and the events that
opened and closed them (docs/design.md §3.4).

A line covers the seconds of one (period, price version). Its provenance adds up to it
exactly: every billed second of the line is given to one interval (the earliest-starting
one that covers it: intervals sharing or abutting a second merge into one run, §3.3 rule
1), and a short run's top-up to the interval holding the run's last second (rule 5). The
intervals are taken as the line was rated: cut at `as_of` for an open invoice, or as they
were at a close (open ones running on past the period) for a finalised line or adjustment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.billing.meter import Interval, billed_seconds, cut_at, run_to, seconds_of
from engine.billing.periods import US_PER_S, period_bounds
from engine.billing.price_book import PriceBook


@dataclass(frozen=True, slots=True)
class Held:
    opened_at_us: int
    closed_at_us: int | None  # None: still open when the line was rated
    opened_by: str | None  # None for rows metered before event ids were kept
    closed_by: str | None
    seconds_in_line: int
    topup_seconds: int  # the minimum-seconds top-up of the run this interval ends


def line_window(book: PriceBook, period: str, price_version: int) -> tuple[int, int]:
    """[lo, hi) in epoch seconds: the period's seconds the version was in force."""
    lo, hi = period_bounds(period)
    since, until = book.version_bounds(price_version)
    return max(lo, since), hi if until is None else min(hi, until)


def accrued_held(intervals: Sequence[Interval], lo: int, hi: int, as_of_us: int,
                 book: PriceBook) -> list[Held]:
    """Provenance of an open invoice's line: intervals cut at `as_of` (Usage.accrued)."""
    # What cut_at keeps, in order, shown as at `as_of`: not yet closed if it closed later.
    kept = [iv if iv[1] is not None and iv[1] <= as_of_us else [iv[0], None, *iv[2:3], None]
            for iv in intervals if iv[0] < as_of_us]
    return _held(kept, cut_at(intervals, as_of_us), lo, hi, book)


def billed_held(intervals: Sequence[Interval], lo: int, hi: int, book: PriceBook
                ) -> list[Held]:
    """Provenance of a line rated at a close: open intervals run on past the line's period
    and past their own start (as at a close: any such horizon rates the window alike, and a
    run still going gets no top-up)."""
    return _held(list(intervals), run_to(intervals, horizon_past(intervals, hi)), lo, hi,
                 book)


def horizon_past(intervals: Sequence[Interval], hi: int) -> int:
    """A horizon past the window [.., hi) and past every interval's start (open ones bill
    on through it, as at a close, where none starts after the close)."""
    return max([hi * US_PER_S + 1, *(iv[0] + US_PER_S for iv in intervals)])


def _held(intervals: Sequence[Interval], rated: Sequence[tuple[int, int]], lo: int, hi: int,
          book: PriceBook) -> list[Held]:
    """`rated[i]` is `intervals[i]` as rated. Seconds in [lo, hi) go to the earliest-starting
    interval holding them; each run's top-up to the interval holding its last second."""
    own: dict[int, tuple[int, int]] = {}  # interval index -> the seconds it is given
    covered = None
    for i in sorted(range(len(rated)), key=lambda k: rated[k]):
        t0, t1 = rated[i]
        if t1 <= t0:
            continue  # empty: it covers no second
        s0, s1 = seconds_of(t0, t1)
        start = s0 if covered is None else max(s0, covered)
        if start < s1:
            own[i] = (start, s1)
        covered = s1 if covered is None else max(covered, s1)
    topup: dict[int, int] = {}
    for a, b in billed_seconds(rated):
        last = b - 1
        if not lo <= last < hi:
            continue
        missing = book.versions[book.index_at(last)].min_seconds - (b - a)
        if missing > 0:
            holder = next(i for i, (s0, s1) in own.items() if s0 <= last < s1)
            topup[holder] = topup.get(holder, 0) + missing
    out = []
    for i, iv in enumerate(intervals):
        s0, s1 = own.get(i, (0, 0))
        seconds = max(0, min(s1, hi) - max(s0, lo))
        if seconds or topup.get(i):
            opened_by, closed_by = [*iv[2:], None, None][:2]
            out.append(Held(iv[0], iv[1], opened_by, closed_by, seconds, topup.get(i, 0)))
    return out
