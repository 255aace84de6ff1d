"""Production rating: billed intervals -> invoice lines -> invoices (docs/design.md §3.3).

Pure functions over plain values. The work is per interval on integer seconds: intervals are
turned into merged ranges of whole seconds, each range is cut at price-version changes and
month boundaries with bisect, and seconds are counted per (month, version). Decimal arithmetic
happens once per invoice line, never per second, and exactly: the working context traps any
rounding, so the only rounding in billing is `round_money`.
"""

from __future__ import annotations

import calendar
import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
from types import MappingProxyType

from engine.policies.spec_catalogue import Spec

US_PER_S = 1_000_000
DEFAULT_GRACE_SECONDS = 3600

# Exact arithmetic: any operation that would round raises instead of silently losing money.
_EXACT = Context(prec=200, traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow])
# Used only by round_money, where rounding is the point.
_ROUNDING = Context(prec=200, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])
_ZERO = Decimal(0)


# --- Calendar months (UTC) as epoch seconds ----------------------------------------------

_FIRST_YEAR, _LAST_YEAR = 1970, 2200
# _MONTH_STARTS[i] is the first second of _PERIODS[i]; one extra entry closes the last month.
_MONTH_STARTS: list[int] = [
    calendar.timegm((y, m, 1, 0, 0, 0))
    for y in range(_FIRST_YEAR, _LAST_YEAR + 1)
    for m in range(1, 13)
] + [calendar.timegm((_LAST_YEAR + 1, 1, 1, 0, 0, 0))]
_PERIODS: list[str] = [
    f"{y:04d}-{m:02d}" for y in range(_FIRST_YEAR, _LAST_YEAR + 1) for m in range(1, 13)
]
_PERIOD_INDEX: dict[str, int] = {p: i for i, p in enumerate(_PERIODS)}


def _month_index(second: int) -> int:
    i = bisect_right(_MONTH_STARTS, second) - 1
    if i < 0 or i >= len(_PERIODS):
        raise ValueError(f"second {second} is outside {_FIRST_YEAR}..{_LAST_YEAR}")
    return i


def period_of(second: int) -> str:
    """The billing period ("YYYY-MM", UTC) containing an epoch second."""
    return _PERIODS[_month_index(second)]


def period_bounds(period: str) -> tuple[int, int]:
    """[start, end) of a period in epoch seconds."""
    i = _PERIOD_INDEX.get(period)
    if i is None:
        raise ValueError(f"not a billing period: {period!r}")
    return _MONTH_STARTS[i], _MONTH_STARTS[i + 1]


# --- Price book ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rates:
    vcpu_s: Decimal
    gib_s: Decimal


@dataclass(frozen=True, slots=True)
class PriceVersion:
    version: int
    effective_from: int  # epoch second
    rate_vcpu_s: Decimal
    rate_gib_s: Decimal
    currency: str
    minor_unit: int  # decimals of the currency: EUR 2, JPY 0
    min_seconds: int = 0
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    # Per-runtime override of both rates ("runc", "kata"); absent runtime -> base rates.
    runtime_rates: Mapping[str, Rates] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only view: a published version never changes.
        object.__setattr__(self, "runtime_rates", MappingProxyType(dict(self.runtime_rates)))

    def rates_for(self, runtime: str) -> Rates:
        r = self.runtime_rates.get(runtime)
        return r if r is not None else Rates(self.rate_vcpu_s, self.rate_gib_s)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rate_ok(x: object) -> bool:
    return isinstance(x, Decimal) and x.is_finite() and x >= 0


def price_book_errors(versions: Sequence[PriceVersion]) -> list[str]:
    """Every reason the versions do not form a price book (empty list = valid)."""
    errors: list[str] = []
    if not versions:
        return ["a price book needs at least one version"]
    for v in versions:
        tag = f"version {v.version}"
        if not _is_int(v.version):
            errors.append(f"{tag}: version must be an int")
        if not _is_int(v.effective_from):
            errors.append(f"{tag}: effective_from must be a whole epoch second (int)")
        for name, rate in (("rate_vcpu_s", v.rate_vcpu_s), ("rate_gib_s", v.rate_gib_s)):
            if not _rate_ok(rate):
                errors.append(f"{tag}: {name} must be a finite Decimal >= 0")
        for runtime, r in v.runtime_rates.items():
            if not isinstance(r, Rates) or not (_rate_ok(r.vcpu_s) and _rate_ok(r.gib_s)):
                errors.append(f"{tag}: runtime {runtime!r} rates must be finite Decimals >= 0")
        if not (isinstance(v.currency, str) and v.currency):
            errors.append(f"{tag}: currency must be a non-empty str")
        for name, n in (
            ("minor_unit", v.minor_unit),
            ("min_seconds", v.min_seconds),
            ("grace_seconds", v.grace_seconds),
        ):
            if not (_is_int(n) and n >= 0):
                errors.append(f"{tag}: {name} must be an int >= 0")
    if len({(v.currency, v.minor_unit) for v in versions}) > 1:
        errors.append("all versions of a price book must share currency and minor unit")
    if errors:
        return errors
    ordered = sorted(versions, key=lambda v: v.effective_from)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.effective_from == b.effective_from:
            errors.append(f"versions {a.version} and {b.version} share effective_from")
        elif a.version >= b.version:
            # A later-published version may only change later seconds.
            errors.append(f"version {b.version} takes effect after {a.version} but numbers lower")
    return errors


@dataclass(frozen=True)
class PriceBook:
    """Validated, effective_from-ordered versions, ready for bisect."""

    versions: tuple[PriceVersion, ...]
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Memo of (version index, runtime, spec) -> (rates, price per second): a handful of
    # entries serve every instance rated against this book.
    _unit_prices: dict[tuple[int, str, Spec], tuple[Rates, Decimal]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        errors = price_book_errors(self.versions)
        if errors:
            raise ValueError("; ".join(errors))
        ordered = tuple(sorted(self.versions, key=lambda v: v.effective_from))
        object.__setattr__(self, "versions", ordered)
        object.__setattr__(self, "starts", tuple(v.effective_from for v in ordered))

    @property
    def currency(self) -> str:
        return self.versions[0].currency

    @property
    def minor_unit(self) -> int:
        return self.versions[0].minor_unit

    def unit_price(self, index: int, runtime: str, spec: Spec) -> tuple[Rates, Decimal]:
        """Rates and price of one second of `spec` under versions[index]."""
        key = (index, runtime, spec)
        hit = self._unit_prices.get(key)
        if hit is None:
            r = self.versions[index].rates_for(runtime)
            unit = _EXACT.add(
                _EXACT.multiply(spec.vcpu, r.vcpu_s), _EXACT.multiply(spec.memory_gib, r.gib_s)
            )
            hit = self._unit_prices[key] = (r, unit)
        return hit

    def in_force(self, second: int) -> PriceVersion | None:
        i = bisect_right(self.starts, second) - 1
        return self.versions[i] if i >= 0 else None


def _book(prices: PriceBook | Sequence[PriceVersion]) -> PriceBook:
    return prices if isinstance(prices, PriceBook) else PriceBook(tuple(prices))


# --- Finalisation ----------------------------------------------------------------------------


def finalises_at(period: str, prices: PriceBook | Sequence[PriceVersion]) -> int:
    """Epoch second at which a period's invoices freeze: its end plus the grace window of the
    version in force at the period's last second (default grace if none is in force)."""
    _, end = period_bounds(period)
    v = _book(prices).in_force(end - 1)
    return end + (v.grace_seconds if v is not None else DEFAULT_GRACE_SECONDS)


# --- Rating -----------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _quantum(minor_unit: int) -> Decimal:
    return Decimal(1).scaleb(-minor_unit)


def round_money(amount: Decimal, minor_unit: int) -> Decimal:
    """THE rounding rule of billing: half-up (away from zero on a tie) to the minor unit."""
    return amount.quantize(_quantum(minor_unit), context=_ROUNDING)


def billed_seconds(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merged half-open ranges [s0, s1) of whole seconds touched by billed intervals.

    Intervals are (t0, t1) in epoch microseconds. [t0, t1) with t1 > t0 touches seconds
    floor(t0) .. ceil(t1) - 1; an empty one touches nothing. Overlapping and touching ranges
    merge, so every second appears once and each range is a maximal billed run.
    """
    merged: list[tuple[int, int]] = []
    cur0 = cur1 = 0
    # Sorting the microsecond intervals also sorts their second ranges (floor/ceil are
    # monotonic), so convert and merge in one pass.
    for t0, t1 in sorted(intervals):
        if t1 <= t0:
            if t1 < t0:
                raise ValueError(f"interval ends before it starts: ({t0}, {t1})")
            continue
        s0 = t0 // US_PER_S
        s1 = -(-t1 // US_PER_S)
        if merged and s0 <= cur1:
            if s1 > cur1:
                cur1 = s1
                merged[-1] = (cur0, cur1)
        else:
            cur0, cur1 = s0, s1
            merged.append((cur0, cur1))
    return merged


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
    def key(self) -> tuple[str, str, str, int]:
        return (self.period, self.account, self.instance_id, self.price_version)


def rate_instance(
    instance_id: str,
    account: str,
    spec: Spec,
    runtime: str,
    intervals: Iterable[tuple[int, int]],
    prices: PriceBook | Sequence[PriceVersion],
    requested: Spec | None = None,
) -> list[InvoiceLine]:
    """Invoice lines of one instance, one per (period, price version), ordered by time.

    Raises ValueError if a billed second has no price version in force.
    """
    ranges = billed_seconds(intervals)
    if not ranges:
        return []
    book = _book(prices)
    starts, versions = book.starts, book.versions
    n_versions = len(starts)
    months = _MONTH_STARTS
    # (month index, version index) -> [seconds, topup_seconds]
    counts: dict[tuple[int, int], list[int]] = {}
    # The window [.., hi) is where (mi, vi) hold. Ranges come sorted, so most of them fall
    # inside the current window and need no bisect at all.
    hi = ranges[0][0]
    mi = vi = 0
    c: list[int] = []
    for a, b in ranges:
        s = a
        while True:
            if s >= hi:
                vi = bisect_right(starts, s) - 1
                if vi < 0:
                    raise ValueError(f"no price version in force at second {s}")
                mi = _month_index(s)
                hi = months[mi + 1]
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

    req = requested if requested is not None else spec
    lines: list[InvoiceLine] = []
    mul = _EXACT.multiply
    for (mi, vi), (secs, topup) in sorted(counts.items()):
        v = versions[vi]
        r, unit = book.unit_price(vi, runtime, spec)
        exact = mul(unit, Decimal(secs + topup))
        lines.append(
            InvoiceLine(
                period=_PERIODS[mi],
                account=account,
                instance_id=instance_id,
                price_version=v.version,
                runtime=runtime,
                spec=spec,
                requested=req,
                rate_vcpu_s=r.vcpu_s,
                rate_gib_s=r.gib_s,
                price_per_second=unit,
                seconds=secs,
                topup_seconds=topup,
                currency=v.currency,
                minor_unit=v.minor_unit,
                amount_exact=exact,
                amount=round_money(exact, v.minor_unit),
            )
        )
    return lines


# --- Adjustments ------------------------------------------------------------------------------


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


def adjustments(
    finalised_lines: Iterable[InvoiceLine],
    recomputed_lines: Iterable[InvoiceLine],
    *,
    billed_in: str,
    corrects: Sequence[str] = (),
    periods: Iterable[str] | None = None,
) -> list[AdjustmentLine]:
    """Adjustment lines for finalised periods whose lines a late report changed.

    `periods` are the finalised periods under correction (default: those of the finalised
    lines; pass them explicitly when a period had no lines before the late report). Lines that
    appear or vanish count as 0 on the other side. Unchanged lines give nothing.
    """
    finalised = list(finalised_lines)
    scope = set(periods) if periods is not None else {x.period for x in finalised}
    fin = {x.key: x for x in finalised if x.period in scope}
    rec = {x.key: x for x in recomputed_lines if x.period in scope}
    out: list[AdjustmentLine] = []
    for key in sorted(fin.keys() | rec.keys()):
        period, account, instance_id, version = key
        if period >= billed_in:
            raise ValueError(f"adjustment for {period} cannot be billed in {billed_in}")
        f, r = fin.get(key), rec.get(key)
        f_amt = f.amount if f is not None else _ZERO
        r_amt = r.amount if r is not None else _ZERO
        delta = _EXACT.subtract(r_amt, f_amt)
        if delta == 0:
            continue
        ref = r if r is not None else f
        assert ref is not None
        if f is not None and r is not None and f.currency != r.currency:
            raise ValueError(f"currency changed for {key}: {f.currency} -> {r.currency}")
        out.append(
            AdjustmentLine(
                billed_in=billed_in,
                period=period,
                account=account,
                instance_id=instance_id,
                price_version=version,
                currency=ref.currency,
                minor_unit=ref.minor_unit,
                finalised_amount=f_amt,
                recomputed_amount=r_amt,
                amount=delta,
                corrects=tuple(corrects),
            )
        )
    return out


# --- Invoices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invoice:
    account: str
    period: str
    currency: str | None  # None only for an invoice with nothing on it
    minor_unit: int | None
    lines: tuple[InvoiceLine, ...]
    adjustments: tuple[AdjustmentLine, ...]
    total: Decimal  # sum of line amounts and adjustment amounts
    content_hash: str  # sha256 of the canonical JSON of everything above


@lru_cache(maxsize=1 << 16)  # the same few rates, specs and prices recur on every invoice
def _canon_decimal(d: Decimal) -> str:
    # One spelling per value ("0.10" and "0.1" hash alike); fixed-point, never exponent.
    return format(d.normalize(_EXACT) if d else _ZERO, "f")


# Column order of the canonical serialisation; named in the hashed body so it is explicit.
_LINE_COLUMNS = (
    "period", "account", "instance_id", "price_version", "runtime", "spec.vcpu",
    "spec.memory_gib", "requested.vcpu", "requested.memory_gib", "rate_vcpu_s", "rate_gib_s",
    "price_per_second", "seconds", "topup_seconds", "currency", "minor_unit", "amount_exact",
    "amount",
)
_ADJUSTMENT_COLUMNS = (
    "billed_in", "period", "account", "instance_id", "price_version", "currency", "minor_unit",
    "finalised_amount", "recomputed_amount", "amount", "corrects",
)


def _line_row(x: InvoiceLine) -> list[object]:
    c = _canon_decimal
    return [
        x.period, x.account, x.instance_id, x.price_version, x.runtime, c(x.spec.vcpu),
        c(x.spec.memory_gib), c(x.requested.vcpu), c(x.requested.memory_gib), c(x.rate_vcpu_s),
        c(x.rate_gib_s), c(x.price_per_second), x.seconds, x.topup_seconds, x.currency,
        x.minor_unit, c(x.amount_exact), c(x.amount),
    ]


def _adjustment_row(x: AdjustmentLine) -> list[object]:
    c = _canon_decimal
    return [
        x.billed_in, x.period, x.account, x.instance_id, x.price_version, x.currency,
        x.minor_unit, c(x.finalised_amount), c(x.recomputed_amount), c(x.amount),
        list(x.corrects),
    ]


def invoice_for(
    account: str,
    period: str,
    lines: Iterable[InvoiceLine],
    adjustment_lines: Iterable[AdjustmentLine] = (),
) -> Invoice:
    """The account's invoice for a period, from any lines: those of other accounts/periods
    (and adjustments billed in other periods) are ignored, so callers may pass everything."""
    mine = sorted((x for x in lines if x.account == account and x.period == period),
                  key=lambda x: x.key)
    adj = sorted(
        (x for x in adjustment_lines if x.account == account and x.billed_in == period),
        key=lambda x: (x.period, x.instance_id, x.price_version, x.corrects, x.amount),
    )
    if len({x.key for x in mine}) != len(mine):
        raise ValueError(f"invoice {account}/{period} has two lines for the same key")
    units = {(x.currency, x.minor_unit) for x in mine} | {(x.currency, x.minor_unit) for x in adj}
    if len(units) > 1:
        raise ValueError(f"invoice {account}/{period} mixes currencies: {sorted(units)}")
    currency, minor_unit = next(iter(units)) if units else (None, None)
    total = _ZERO if minor_unit is None else round_money(_ZERO, minor_unit)
    for x in mine:
        total = _EXACT.add(total, x.amount)
    for a in adj:
        total = _EXACT.add(total, a.amount)
    body = {
        "account": account,
        "period": period,
        "currency": currency,
        "minor_unit": minor_unit,
        "line_columns": _LINE_COLUMNS,
        "lines": [_line_row(x) for x in mine],
        "adjustment_columns": _ADJUSTMENT_COLUMNS,
        "adjustments": [_adjustment_row(x) for x in adj],
        "total": _canon_decimal(total),
    }
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()
    return Invoice(
        account=account,
        period=period,
        currency=currency,
        minor_unit=minor_unit,
        lines=tuple(mine),
        adjustments=tuple(adj),
        total=total,
        content_hash=digest,
    )
