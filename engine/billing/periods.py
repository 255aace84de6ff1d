"""Billing periods: calendar months in UTC, named "YYYY-MM" (docs/design.md §3.3 rule 6).

Times in billing are integers: epoch microseconds for what happened, epoch seconds for what
is billed. `micros` is the only conversion from a datetime; month starts are a precomputed
table searched with bisect, so a period is never derived through datetime arithmetic.
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from datetime import UTC, datetime

US_PER_S = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FIRST_YEAR, _LAST_YEAR = 1970, 2200
# MONTH_STARTS[i] is the first second of PERIODS[i]; one extra entry closes the last month.
MONTH_STARTS: list[int] = [
    calendar.timegm((y, m, 1, 0, 0, 0))
    for y in range(_FIRST_YEAR, _LAST_YEAR + 1)
    for m in range(1, 13)
] + [calendar.timegm((_LAST_YEAR + 1, 1, 1, 0, 0, 0))]
PERIODS: list[str] = [
    f"{y:04d}-{m:02d}" for y in range(_FIRST_YEAR, _LAST_YEAR + 1) for m in range(1, 13)
]
_PERIOD_INDEX: dict[str, int] = {p: i for i, p in enumerate(PERIODS)}


def micros(ts: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    d = ts - EPOCH  # integer fields: exact, and cheaper than dividing timedeltas
    return (d.days * 86_400 + d.seconds) * US_PER_S + d.microseconds


def month_index(second: int) -> int:
    """Index into PERIODS of the month holding an epoch second."""
    i = bisect_right(MONTH_STARTS, second) - 1
    if i < 0 or i >= len(PERIODS):
        raise ValueError(f"second {second} is outside {_FIRST_YEAR}..{_LAST_YEAR}")
    return i


def period_of(second: int) -> str:
    """The billing period ("YYYY-MM", UTC) containing an epoch second."""
    return PERIODS[month_index(second)]


def period_at(t_us: int) -> str:
    """The billing period an instant (epoch microseconds) falls in."""
    return PERIODS[month_index(t_us // US_PER_S)]


def period_index(period: str) -> int:
    """Index into PERIODS: consecutive periods have consecutive indexes."""
    i = _PERIOD_INDEX.get(period)
    if i is None:
        raise ValueError(f"not a billing period: {period!r}")
    return i


def period_bounds(period: str) -> tuple[int, int]:
    """[start, end) of a period in epoch seconds."""
    i = period_index(period)
    return MONTH_STARTS[i], MONTH_STARTS[i + 1]


def next_period(period: str) -> str:
    return period_of(period_bounds(period)[1])


def periods_between(first: str, last: str) -> list[str]:
    """Every period from `first` to `last`, both included (empty if last < first)."""
    return PERIODS[period_index(first):period_index(last) + 1]


def periods_of_seconds(s0: int, s1: int) -> list[str]:
    """Periods holding a second of the non-empty range [s0, s1) of epoch seconds."""
    return PERIODS[month_index(s0):month_index(s1 - 1) + 1]
