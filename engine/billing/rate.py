"""The rating: billed seconds -> invoice lines (docs/design.md §3.3 rules 2, 4 and 5).

The work is per run of whole seconds: each run is cut at price-version changes and month
boundaries with bisect, and seconds are counted per (month, version). Decimal arithmetic
happens once per line, never per second, and exactly; the line's amount is the one
rounding of money.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from engine.billing.meter import billed_seconds
from engine.billing.money import EXACT, round_money
from engine.billing.periods import MONTH_STARTS, PERIODS, month_index
from engine.billing.price_book import PriceBook, PriceVersion, as_book
from engine.policies.spec_catalogue import Spec

LineKey = tuple[str, str, str, int]  # (period, account, instance_id, price_version)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    period: str
    account: str
    instance_id: str
    price_version: int
    runtime: str
    spec: Spec  # billed spec
    requested: Spec  # what was asked for, recorded next to what we bill
    rate_vcpu_s: Decimal
    rate_gib_s: Decimal
    price_per_second: Decimal  # spec.vcpu * rate_vcpu_s + spec.memory_gib * rate_gib_s
    seconds: int  # billed seconds of this instance in this period at this version
    topup_seconds: int  # minimum-seconds top-up charged on this line
    currency: str
    minor_unit: int
    amount_exact: Decimal  # (seconds + topup_seconds) * price_per_second, unrounded
    amount: Decimal  # round_money(amount_exact)

    @property
    def key(self) -> LineKey:
        return (self.period, self.account, self.instance_id, self.price_version)


def _counts(runs: Sequence[tuple[int, int]], book: PriceBook) -> dict[tuple[int, int], list[int]]:
    """(month index, version index) -> [seconds, topup_seconds] of sorted, merged runs."""
    starts, versions = book.starts, book.versions
    n_versions = len(starts)
    counts: dict[tuple[int, int], list[int]] = {}
    # The window [.., hi) is where (mi, vi) hold. Runs come sorted, so most of them fall
    # inside the current window and need no bisect at all.
    hi = runs[0][0]
    mi = vi = 0
    c: list[int] = []
    for a, b in runs:
        s = a
        while True:
            if s >= hi:
                vi = bisect_right(starts, s) - 1  # PriceBook.index_at, inlined: hot
                if vi < 0:
                    raise ValueError(f"no price version in force at second {s}")
                mi = month_index(s)
                hi = MONTH_STARTS[mi + 1]
                if vi + 1 < n_versions and starts[vi + 1] < hi:
                    hi = starts[vi + 1]
                c = counts.setdefault((mi, vi), [0, 0])
            if b <= hi:
                c[0] += b - s
                break
            c[0] += hi - s
            s = hi
        # c and vi now belong to the run's last second: the top-up goes on that line, and
        # that version's min_seconds decides whether the run is short.
        missing = versions[vi].min_seconds - (b - a)
        if missing > 0:
            c[1] += missing
    return counts


def rate_runs(instance_id: str, account: str, spec: Spec, runtime: str,
              runs: Sequence[tuple[int, int]], book: PriceBook,
              requested: Spec | None = None) -> list[InvoiceLine]:
    """Invoice lines of one instance's billed runs (from `billed_seconds`), one per
    (period, price version), ordered by time.

    Raises ValueError if a billed second has no price version in force.
    """
    if not runs:
        return []
    req = requested if requested is not None else spec
    lines: list[InvoiceLine] = []
    for (mi, vi), (secs, topup) in sorted(_counts(runs, book).items()):
        v = book.versions[vi]
        r, unit = book.unit_price(vi, runtime, spec)
        exact = EXACT.multiply(unit, Decimal(secs + topup))
        lines.append(InvoiceLine(
            period=PERIODS[mi], account=account, instance_id=instance_id,
            price_version=v.version, runtime=runtime, spec=spec, requested=req,
            rate_vcpu_s=r.vcpu_s, rate_gib_s=r.gib_s, price_per_second=unit, seconds=secs,
            topup_seconds=topup, currency=v.currency, minor_unit=v.minor_unit,
            amount_exact=exact, amount=round_money(exact, v.minor_unit)))
    return lines


def rate_instance(instance_id: str, account: str, spec: Spec, runtime: str,
                  intervals: Iterable[tuple[int, int]],
                  prices: PriceBook | Sequence[PriceVersion],
                  requested: Spec | None = None) -> list[InvoiceLine]:
    """Invoice lines of one instance's billed intervals (epoch microseconds): the fold's
    seconds, then the rating."""
    runs = billed_seconds(intervals)
    if not runs:
        return []
    return rate_runs(instance_id, account, spec, runtime, runs, as_book(prices), requested)
