"""The invoice read models: finalised invoices exactly as their InvoiceFinalized events
recorded them, and the periods each cell has closed.

Plain SQL tables for operators (psql); the open period is not stored here but rated at query
time from the meter (`usage`) up to a named `as_of` (adapters/queries.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from engine.domain.invoice import (
    BillingCalendar,
    Invoice,
    adjustment_from_record,
    line_from_record,
)
from engine.policies import rating
from projections.instances import iso
from projections.projection import RowProjection
from projections.tables import Key, Row, Rows, Table
from projections.usage import accrued, extended, rate_intervals

INVOICES = Table("invoices", ("cell", "account", "period"), {
    "cell": "text", "account": "text", "period": "text", "currency": "text",
    "minor_unit": "int", "lines": "int", "adjustments": "int", "total": "numeric",
    "content_hash": "text", "finalised_at": "text", "event_id": "text",
})
INVOICE_LINES = Table(
    "invoice_lines", ("cell", "account", "period", "instance_id", "price_version"), {
        "cell": "text", "account": "text", "period": "text", "instance_id": "text",
        "price_version": "int", "runtime": "text", "requested_vcpu": "numeric",
        "requested_memory_gib": "numeric", "billed_vcpu": "numeric",
        "billed_memory_gib": "numeric", "rate_vcpu_s": "numeric", "rate_gib_s": "numeric",
        "price_per_second": "numeric", "seconds": "int", "topup_seconds": "int",
        "currency": "text", "amount_exact": "numeric", "amount": "numeric",
    })
INVOICE_ADJUSTMENTS = Table(
    "invoice_adjustments",
    ("cell", "account", "billed_in", "period", "instance_id", "price_version"), {
        "cell": "text", "account": "text", "billed_in": "text", "period": "text",
        "instance_id": "text", "price_version": "int", "currency": "text",
        "finalised_amount": "numeric", "recomputed_amount": "numeric", "amount": "numeric",
        "corrects": "text",
    })
BILLING_PERIODS = Table("billing_periods", ("cell", "period"), {
    "cell": "text", "period": "text", "closed_at": "text", "invoices": "int",
})

_LINE_FIELDS = ("instance_id", "price_version", "runtime", "requested_vcpu",
                "requested_memory_gib", "billed_vcpu", "billed_memory_gib", "rate_vcpu_s",
                "rate_gib_s", "price_per_second", "seconds", "topup_seconds", "amount_exact",
                "amount")


class InvoicesProjection(RowProjection):
    name = "invoices"
    tables = (INVOICES, INVOICE_LINES, INVOICE_ADJUSTMENTS, BILLING_PERIODS)

    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        return []  # invoices are written once, whole: nothing to read first

    def apply(self, event: Any, rows: Rows) -> None:
        if isinstance(event, Invoice.InvoiceFinalized):
            where = {"cell": event.cell, "account": event.account}
            rows.put(INVOICES, {
                **where, "period": event.period, "currency": event.currency,
                "minor_unit": event.minor_unit, "lines": len(event.lines),
                "adjustments": len(event.adjustments), "total": event.total,
                "content_hash": event.content_hash, "finalised_at": iso(event.timestamp),
                "event_id": f"invoice/{event.account}/{event.period}#1",
            })
            for x in event.lines:
                rows.put(INVOICE_LINES, {**where, "period": event.period,
                                         "currency": event.currency,
                                         **{f: x[f] for f in _LINE_FIELDS}})
            for a in event.adjustments:
                rows.put(INVOICE_ADJUSTMENTS, {
                    **where, "billed_in": event.period, "period": a["period"],
                    "instance_id": a["instance_id"], "price_version": a["price_version"],
                    "currency": event.currency, "finalised_amount": a["finalised_amount"],
                    "recomputed_amount": a["recomputed_amount"], "amount": a["amount"],
                    "corrects": " ".join(a["corrects"]),
                })
        elif isinstance(event, BillingCalendar.PeriodClosed):
            rows.put(BILLING_PERIODS, {"cell": event.cell, "period": event.period,
                                       "closed_at": iso(event.timestamp),
                                       "invoices": event.invoices})


def finalised_invoice(invoice: Row, lines: list[Row], adjustments: list[Row]
                      ) -> rating.Invoice:
    """A finalised invoice rebuilt from its rows, with its content hash recomputed: equal to
    the recorded `content_hash` when the rows hold exactly what was finalised."""
    account, period = invoice["account"], invoice["period"]
    currency, minor_unit = invoice["currency"], invoice["minor_unit"]
    return rating.invoice_for(
        account, period,
        [line_from_record(x, account, period, currency, minor_unit) for x in lines],
        [adjustment_from_record({**a, "corrects": a["corrects"].split()}, account, period,
                                currency, minor_unit) for a in adjustments])


def billed_so_far(lines: Iterable[Row], adjustments: Iterable[Row]
                  ) -> dict[tuple[str, str, str, int], Decimal]:
    """(cell, period, instance, version) -> finalised amount plus adjustments since."""
    billed: dict[tuple[str, str, str, int], Decimal] = {}
    for x in lines:
        key = (x["cell"], x["period"], x["instance_id"], int(x["price_version"]))
        billed[key] = billed.get(key, Decimal(0)) + Decimal(x["amount"])
    for a in adjustments:
        key = (a["cell"], a["period"], a["instance_id"], int(a["price_version"]))
        billed[key] = billed.get(key, Decimal(0)) + Decimal(a["amount"])
    return billed


def open_invoices(account: str, cell: str, usage: list[Row], book: rating.PriceBook,
                  closed: str | None, billed: dict[tuple[str, str, str, int], Decimal],
                  as_of_us: int) -> list[rating.Invoice]:
    """The account's not yet finalised invoices in a cell, accrued up to `as_of`.

    The earliest open period also carries the adjustments pending for closed periods:
    recomputed lines (every interval known now) minus what was billed for them so far.
    """
    lines = [x for row in usage for x in rate_intervals(row, accrued(row, as_of_us), book)
             if closed is None or x.period > closed]
    periods = {x.period for x in lines}
    pending: list[rating.AdjustmentLine] = []
    if closed is not None:
        closed_end = rating.period_bounds(closed)[1]
        first_open = rating.period_of(closed_end)
        horizon = max(as_of_us, closed_end * rating.US_PER_S + 1)
        now = {(x.period, x.instance_id, x.price_version): x for row in usage
               for x in rate_intervals(row, extended(row, horizon), book) if x.period <= closed}
        was = {k[1:]: v for k, v in billed.items() if k[0] == cell}
        for key in sorted(now.keys() | was.keys()):
            period, instance_id, version = key
            amount = now[key].amount if key in now else Decimal(0)
            before = was.get(key, Decimal(0))
            if amount != before:
                pending.append(rating.AdjustmentLine(
                    billed_in=first_open, period=period, account=account,
                    instance_id=instance_id, price_version=version, currency=book.currency,
                    minor_unit=book.minor_unit, finalised_amount=before,
                    recomputed_amount=amount, amount=amount - before, corrects=()))
        if pending:
            periods.add(first_open)
    return [rating.invoice_for(account, p, lines, pending) for p in sorted(periods)]
