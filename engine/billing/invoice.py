"""An invoice from lines and adjustments, as an ordered list of small calculations
(docs/design.md §3.3 rule 4, §3.4), after OpenMeter's invoicecalc.

Each calculation reads and fills one part of a draft; `invoice_for` runs them in order and
freezes the result. The content hash covers the canonical JSON of everything on the
invoice, so anyone holding the lines can recompute it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from engine.billing.adjust import AdjustmentLine
from engine.billing.money import ZERO, canonical, exact_sum, round_money
from engine.billing.rate import InvoiceLine


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


@dataclass(slots=True)
class Draft:
    account: str
    period: str
    lines: list[InvoiceLine]
    adjustments: list[AdjustmentLine]
    currency: str | None = None
    minor_unit: int | None = None
    total: Decimal = ZERO
    content_hash: str = field(default="")


# --- the calculations, in order ----------------------------------------------------------------


def own_lines(d: Draft) -> None:
    """Only the account's lines of the period (callers may pass everything), by key."""
    d.lines = sorted((x for x in d.lines if x.account == d.account and x.period == d.period),
                     key=lambda x: x.key)
    if len({x.key for x in d.lines}) != len(d.lines):
        raise ValueError(f"invoice {d.account}/{d.period} has two lines for the same key")


def own_adjustments(d: Draft) -> None:
    """Only the adjustments billed in this period to this account."""
    d.adjustments = sorted(
        (x for x in d.adjustments if x.account == d.account and x.billed_in == d.period),
        key=lambda x: (x.period, x.instance_id, x.price_version, x.corrects, x.amount))


def one_currency(d: Draft) -> None:
    units = {(x.currency, x.minor_unit) for x in d.lines} | {
        (x.currency, x.minor_unit) for x in d.adjustments}
    if len(units) > 1:
        raise ValueError(f"invoice {d.account}/{d.period} mixes currencies: {sorted(units)}")
    d.currency, d.minor_unit = next(iter(units)) if units else (None, None)


def total(d: Draft) -> None:
    """The exact sum of line and adjustment amounts, spelled to the minor unit."""
    start = ZERO if d.minor_unit is None else round_money(ZERO, d.minor_unit)
    d.total = exact_sum([x.amount for x in d.lines] + [a.amount for a in d.adjustments], start)


def content_hash(d: Draft) -> None:
    body = {
        "account": d.account,
        "period": d.period,
        "currency": d.currency,
        "minor_unit": d.minor_unit,
        "line_columns": LINE_COLUMNS,
        "lines": [_line_row(x) for x in d.lines],
        "adjustment_columns": ADJUSTMENT_COLUMNS,
        "adjustments": [_adjustment_row(x) for x in d.adjustments],
        "total": canonical(d.total),
    }
    d.content_hash = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()


CALCULATIONS: tuple[Callable[[Draft], None], ...] = (
    own_lines, own_adjustments, one_currency, total, content_hash)


def invoice_for(account: str, period: str, lines: Iterable[InvoiceLine],
                adjustment_lines: Iterable[AdjustmentLine] = ()) -> Invoice:
    """The account's invoice for a period, from any lines: those of other accounts/periods
    (and adjustments billed in other periods) are ignored, so callers may pass everything."""
    d = Draft(account, period, list(lines), list(adjustment_lines))
    for calculate in CALCULATIONS:
        calculate(d)
    return Invoice(account=d.account, period=d.period, currency=d.currency,
                   minor_unit=d.minor_unit, lines=tuple(d.lines),
                   adjustments=tuple(d.adjustments), total=d.total,
                   content_hash=d.content_hash)


# --- the canonical serialisation the hash covers ----------------------------------------------

# Column order, named in the hashed body so it is explicit.
LINE_COLUMNS = (
    "period", "account", "instance_id", "price_version", "runtime", "spec.vcpu",
    "spec.memory_gib", "requested.vcpu", "requested.memory_gib", "rate_vcpu_s", "rate_gib_s",
    "price_per_second", "seconds", "topup_seconds", "currency", "minor_unit", "amount_exact",
    "amount",
)
ADJUSTMENT_COLUMNS = (
    "billed_in", "period", "account", "instance_id", "price_version", "currency", "minor_unit",
    "finalised_amount", "recomputed_amount", "amount", "corrects",
)


def _line_row(x: InvoiceLine) -> list[object]:
    c = canonical
    return [
        x.period, x.account, x.instance_id, x.price_version, x.runtime, c(x.spec.vcpu),
        c(x.spec.memory_gib), c(x.requested.vcpu), c(x.requested.memory_gib), c(x.rate_vcpu_s),
        c(x.rate_gib_s), c(x.price_per_second), x.seconds, x.topup_seconds, x.currency,
        x.minor_unit, c(x.amount_exact), c(x.amount),
    ]


def _adjustment_row(x: AdjustmentLine) -> list[object]:
    c = canonical
    return [
        x.billed_in, x.period, x.account, x.instance_id, x.price_version, x.currency,
        x.minor_unit, c(x.finalised_amount), c(x.recomputed_amount), c(x.amount),
        list(x.corrects),
    ]
