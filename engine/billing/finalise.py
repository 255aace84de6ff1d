"""The Tick decider that finalises periods (docs/design.md §3.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.billing.periods import micros
from engine.domain.invoice import BillingCalendar, Invoice, finalized_fields

if TYPE_CHECKING:
    from engine.decision import Draft
    from schemas.commands import Tick


def finalise_periods(draft: Draft, tick: Tick) -> str | None:
    """Close every period of the tick's cell whose end plus grace has passed, oldest first,
    recording one InvoiceFinalized per account with something to bill, then PeriodClosed.
    Each close is observed before the next period is weighed (it settles late reports)."""
    meter = draft.world.billing.cells.get(tick.cell)
    if meter is None:
        return None
    now_us = micros(tick.now)
    notes = []
    while (period := meter.due(now_us)) is not None:
        invoices = meter.invoices(period, now_us)
        # No chain head in the event: the chain counts batches, which a decision must not see
        # (§2.2). The head an invoice pins is its own event's stored link (§2.11).
        for invoice in invoices:
            draft.touch(Invoice.create(tick.now, **finalized_fields(tick.cell, invoice)),
                        f"invoice/{invoice.account}/{period}")
        calendar = draft.world.aggregates.get(BillingCalendar.create_id(tick.cell)) \
            or BillingCalendar.create(tick.now, cell=tick.cell)
        calendar.close(period, len(invoices), tick.now)
        draft.touch(calendar, f"billing-calendar/{tick.cell}")
        notes.append(f"{period} ({len(invoices)} invoice(s))")
    note = ("finalised " + ", ".join(notes)) if notes else None
    if meter.book_error:  # the handler accepted a version rating refuses: say so every tick
        note = "; ".join(filter(None, [note, "price book invalid, billing on its last "
                                              f"valid versions: {meter.book_error}"]))
    return note
