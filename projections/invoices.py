"""The invoice read models: finalised invoices exactly as their InvoiceFinalized events
recorded them, and the periods each cell has closed.

Plain SQL tables for operators (psql), keyed account first and period second, so that one
account's invoices for a period are one range of the primary key: adjustments by the period
whose invoice carries them (`billed_in`). The open period is not stored here but rated at
query time from the meter (`usage`) up to a named `as_of` (adapters/queries.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.billing.invoice import Invoice as RatedInvoice
from engine.billing.invoice import invoice_for
from engine.domain.invoice import (
    BillingCalendar,
    Invoice,
    adjustment_from_record,
    line_from_record,
)
from projections.projection import RowProjection
from projections.tables import Key, Row, Rows, Table
from projections.texts import iso

INVOICES = Table("invoices_by_period", ("account", "period", "cell"), {
    "account": "text", "period": "text", "cell": "text", "currency": "text",
    "minor_unit": "int", "lines": "int", "adjustments": "int", "total": "numeric",
    "content_hash": "text", "finalised_at": "text", "event_id": "text",
})
INVOICE_LINES = Table(
    "invoice_lines_by_period", ("account", "period", "instance_id", "cell", "price_version"), {
        "account": "text", "period": "text", "instance_id": "text", "cell": "text",
        "price_version": "int", "runtime": "text", "requested_vcpu": "numeric",
        "requested_memory_gib": "numeric", "billed_vcpu": "numeric",
        "billed_memory_gib": "numeric", "rate_vcpu_s": "numeric", "rate_gib_s": "numeric",
        "price_per_second": "numeric", "seconds": "int", "topup_seconds": "int",
        "currency": "text", "amount_exact": "numeric", "amount": "numeric",
    })
INVOICE_ADJUSTMENTS = Table(
    "invoice_adjustments_by_period",
    ("account", "billed_in", "instance_id", "cell", "period", "price_version"), {
        "account": "text", "billed_in": "text", "instance_id": "text", "cell": "text",
        "period": "text", "price_version": "int", "currency": "text",
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
    # Versioned with its tables' shape (see UsageProjection.name).
    name = "invoices_v2"
    tables = (INVOICES, INVOICE_LINES, INVOICE_ADJUSTMENTS, BILLING_PERIODS)
    events = (Invoice.InvoiceFinalized, BillingCalendar.PeriodClosed)

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


def finalised_invoice(invoice: Row, lines: list[Row], adjustments: list[Row]) -> RatedInvoice:
    """A finalised invoice rebuilt from its rows, with its content hash recomputed: equal to
    the recorded `content_hash` when the rows hold exactly what was finalised."""
    account, period = invoice["account"], invoice["period"]
    currency, minor_unit = invoice["currency"], invoice["minor_unit"]
    return invoice_for(
        account, period,
        [line_from_record(x, account, period, currency, minor_unit) for x in lines],
        [adjustment_from_record(adjustment_record(a), account, period, currency, minor_unit)
         for a in adjustments])


def adjustment_record(row: Row) -> dict[str, Any]:
    """An adjustment row in the event's record format."""
    return {**row, "corrects": row["corrects"].split()}
