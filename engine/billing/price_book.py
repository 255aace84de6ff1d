"""Price books as values: effective-dated versions, validated, ready for bisect
(docs/design.md §3.3 rule 2, §5.5), and when a period's invoices freeze (§3.4).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from engine.billing.money import EXACT
from engine.billing.periods import period_bounds
from engine.policies.spec_catalogue import Spec

DEFAULT_GRACE_SECONDS = 3600


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

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A read-only view cannot be pickled; the writer's state is (engine snapshots).
        return (PriceVersion, (self.version, self.effective_from, self.rate_vcpu_s,
                               self.rate_gib_s, self.currency, self.minor_unit,
                               self.min_seconds, self.grace_seconds, dict(self.runtime_rates)))

    def rates_for(self, runtime: str) -> Rates:
        r = self.runtime_rates.get(runtime)
        return r if r is not None else Rates(self.rate_vcpu_s, self.rate_gib_s)


def price_version(terms: Mapping[str, Any]) -> PriceVersion:
    """A published version (PriceBook.VersionPublished's number and terms) as a value."""
    runtime_rates = {
        runtime: Rates(Decimal(r["rate_per_vcpu_second"]), Decimal(r["rate_per_gib_second"]))
        for runtime, r in (terms.get("runtime_rates") or {}).items()
    }
    return PriceVersion(
        version=terms["number"], effective_from=terms["effective_from"],
        rate_vcpu_s=Decimal(terms["rate_per_vcpu_second"]),
        rate_gib_s=Decimal(terms["rate_per_gib_second"]), currency=terms["currency"],
        minor_unit=terms["minor_unit"], min_seconds=terms["min_seconds"],
        grace_seconds=terms["grace_seconds"], runtime_rates=runtime_rates)


def version_in_force(versions: Sequence[PriceVersion], at: datetime) -> PriceVersion | None:
    """The version in force at `at` among versions in publishing order (each takes effect
    after the one before it, docs/design.md §5.5): the one price rule decisions use."""
    when = at.timestamp()  # once, not once per version looked at
    for version in reversed(versions):
        if version.effective_from <= when:
            return version
    return None


def weights(version: PriceVersion, runtime: str) -> tuple[Decimal, Decimal]:
    """The rates per vCPU-second and per GiB-second `runtime` pays under `version`: what
    rounding a request up to the cheapest covering spec weighs specs by (§3.3)."""
    rates = version.rates_for(runtime)
    return rates.vcpu_s, rates.gib_s


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


# A unit price's memo key: a Decimal's digits and exponent, so "1" and "1.0" (equal, and
# hashing alike) never share an entry and every answer is spelled as its own question.
_SpecKey = tuple[int, str, tuple[Any, ...], tuple[Any, ...]]


@dataclass(frozen=True)
class PriceBook:
    """Validated, effective_from-ordered versions, ready for bisect."""

    versions: tuple[PriceVersion, ...]
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Memo of (version index, runtime, spec) -> (rates, price per second): a handful of
    # entries serve every instance rated against this book.
    _unit_prices: dict[_SpecKey, tuple[Rates, Decimal]] = field(
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
        """Rates and price of one second of `spec` under versions[index], exactly:
        vcpu x rate per vCPU-second + GiB x rate per GiB-second."""
        key = (index, runtime, spec.vcpu.as_tuple(), spec.memory_gib.as_tuple())
        hit = self._unit_prices.get(key)
        if hit is None:
            r = self.versions[index].rates_for(runtime)
            unit = EXACT.add(EXACT.multiply(spec.vcpu, r.vcpu_s),
                             EXACT.multiply(spec.memory_gib, r.gib_s))
            hit = self._unit_prices[key] = (r, unit)
        return hit

    def index_at(self, second: int) -> int:
        """Index of the version in force at an epoch second (-1: none)."""
        return bisect_right(self.starts, second) - 1

    def in_force(self, second: int) -> PriceVersion | None:
        i = self.index_at(second)
        return self.versions[i] if i >= 0 else None

    def version_bounds(self, number: int) -> tuple[int, int | None]:
        """[from, until) in epoch seconds of the version numbered `number` (None: no end)."""
        (i,) = [i for i, v in enumerate(self.versions) if v.version == number]
        return self.starts[i], self.starts[i + 1] if i + 1 < len(self.starts) else None


def as_book(prices: PriceBook | Sequence[PriceVersion]) -> PriceBook:
    return prices if isinstance(prices, PriceBook) else PriceBook(tuple(prices))


def finalises_at(period: str, prices: PriceBook | Sequence[PriceVersion]) -> int:
    """Epoch second at which a period's invoices freeze: its end plus the grace window of the
    version in force at the period's last second (default grace if none is in force)."""
    _, end = period_bounds(period)
    v = as_book(prices).in_force(end - 1)
    return end + (v.grace_seconds if v is not None else DEFAULT_GRACE_SECONDS)
