"""Invoices as facts: a finalised invoice per (cell, account, period), and each cell's
billing calendar, which records the periods it has closed (docs/design.md §3.4).

A finalised invoice is one creation event and never changes: corrections arrive as
adjustment lines on a later invoice. Lines travel as JSON-ready dicts (Decimals as strings)
so the event carries exactly what its `content_hash` was computed over.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.billing.adjust import AdjustmentLine
from engine.billing.invoice import Invoice as RatedInvoice
from engine.billing.rate import InvoiceLine
from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id
from engine.policies.spec_catalogue import Spec


class Invoice(Recorded):
    @staticmethod
    def create_id(cell: str, account: str, period: str) -> UUID:
        return aggregate_id("invoice", cell, account, period)

    class InvoiceFinalized(Aggregate.Created):
        cell: str
        account: str
        period: str
        currency: str | None
        minor_unit: int | None
        lines: list[dict[str, Any]]
        adjustments: list[dict[str, Any]]
        total: str
        content_hash: str
        # Only in events of older engines: the cell's chain head before the finalising batch
        # (hex), which `cis audit verify` still checks. It depended on batch boundaries, so
        # new events leave it None: the head an invoice pins is its event's stored link.
        chain_head: str | None = None

    def __init__(
        self,
        cell: str,
        account: str,
        period: str,
        currency: str | None,
        minor_unit: int | None,
        lines: list[dict[str, Any]],
        adjustments: list[dict[str, Any]],
        total: str,
        content_hash: str,
        chain_head: str | None = None,  # older events only (see InvoiceFinalized)
    ) -> None:
        # Lines stay in the event (and the projection), not in the writer's memory.
        self.cell = cell
        self.account = account
        self.period = period
        self.currency = currency
        self.total = total
        self.content_hash = content_hash
        self.chain_head = chain_head


class BillingCalendar(Recorded):
    """Which periods a cell has closed: later reports into them become adjustments."""

    @staticmethod
    def create_id(cell: str) -> UUID:
        return aggregate_id("billing-calendar", cell)

    class Opened(Aggregate.Created):
        cell: str

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.closed: str | None = None  # the latest closed period, "YYYY-MM"

    class PeriodClosed(Aggregate.Event):
        cell: str
        period: str
        invoices: int  # invoices finalised for it (accounts with nothing to bill get none)

        def apply(self, calendar: BillingCalendar) -> None:
            calendar.closed = self.period

    def close(self, period: str, invoices: int, at: datetime) -> None:
        self.trigger_event(self.PeriodClosed, cell=self.cell, period=period, invoices=invoices,
                           timestamp=at)


# --- the event's line format: what the content hash covers, as JSON-ready dicts ------------

def line_record(x: InvoiceLine) -> dict[str, Any]:
    return {
        "instance_id": x.instance_id, "price_version": x.price_version, "runtime": x.runtime,
        "billed_vcpu": str(x.spec.vcpu), "billed_memory_gib": str(x.spec.memory_gib),
        "requested_vcpu": str(x.requested.vcpu),
        "requested_memory_gib": str(x.requested.memory_gib),
        "rate_vcpu_s": str(x.rate_vcpu_s), "rate_gib_s": str(x.rate_gib_s),
        "price_per_second": str(x.price_per_second), "seconds": x.seconds,
        "topup_seconds": x.topup_seconds, "amount_exact": str(x.amount_exact),
        "amount": str(x.amount),
    }


def line_from_record(r: dict[str, Any], account: str, period: str, currency: str,
                     minor_unit: int) -> InvoiceLine:
    d = Decimal
    return InvoiceLine(
        period=period, account=account, instance_id=r["instance_id"],
        price_version=int(r["price_version"]), runtime=r["runtime"],
        spec=Spec(d(r["billed_vcpu"]), d(r["billed_memory_gib"])),
        requested=Spec(d(r["requested_vcpu"]), d(r["requested_memory_gib"])),
        rate_vcpu_s=d(r["rate_vcpu_s"]), rate_gib_s=d(r["rate_gib_s"]),
        price_per_second=d(r["price_per_second"]), seconds=int(r["seconds"]),
        topup_seconds=int(r["topup_seconds"]), currency=currency, minor_unit=minor_unit,
        amount_exact=d(r["amount_exact"]), amount=d(r["amount"]),
    )


def adjustment_record(x: AdjustmentLine) -> dict[str, Any]:
    return {
        "period": x.period, "instance_id": x.instance_id, "price_version": x.price_version,
        "finalised_amount": str(x.finalised_amount),
        "recomputed_amount": str(x.recomputed_amount), "amount": str(x.amount),
        "corrects": list(x.corrects),
    }


def adjustment_from_record(r: dict[str, Any], account: str, billed_in: str, currency: str,
                           minor_unit: int) -> AdjustmentLine:
    return AdjustmentLine(
        billed_in=billed_in, period=r["period"], account=account,
        instance_id=r["instance_id"], price_version=int(r["price_version"]),
        currency=currency, minor_unit=minor_unit,
        finalised_amount=Decimal(r["finalised_amount"]),
        recomputed_amount=Decimal(r["recomputed_amount"]), amount=Decimal(r["amount"]),
        corrects=tuple(r["corrects"]),
    )


def finalized_fields(cell: str, invoice: RatedInvoice) -> dict[str, Any]:
    """The InvoiceFinalized event's fields for a rated invoice."""
    return {
        "cell": cell, "account": invoice.account, "period": invoice.period,
        "currency": invoice.currency, "minor_unit": invoice.minor_unit,
        "lines": [line_record(x) for x in invoice.lines],
        "adjustments": [adjustment_record(x) for x in invoice.adjustments],
        "total": str(invoice.total), "content_hash": invoice.content_hash,
    }
