"""The writer's billing meter: a World observer that routes events to one CellMeter per cell.

It reads events only (never the aggregates), so it also runs on a bare read of the log
(simulations/bench_billing). What it holds is exactly what the log implies: it sees every
event replayed at start-up and recorded live.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from engine.billing.cell_meter import CellMeter, Metered
from engine.billing.periods import micros
from engine.domain.instance import Instance
from engine.domain.invoice import BillingCalendar, Invoice
from engine.domain.price_book import PriceBook


class BillingMeter:
    def __init__(self) -> None:
        self.cells: dict[str, CellMeter] = {}
        self._instances: dict[UUID, tuple[CellMeter, Metered]] = {}
        self._books: dict[UUID, str] = {}  # price book id -> cell

    def cell(self, cell: str) -> CellMeter:
        meter = self.cells.get(cell)
        if meter is None:
            meter = self.cells[cell] = CellMeter(cell)
        return meter

    def observe(self, event: Any, aggregate: Any = None) -> None:
        if isinstance(event, Instance.Transitioned):
            meter, m = self._instances[event.originator_id]
            meter.transition(m, event.new_state(), micros(event.timestamp),
                             event.originator_version)
            if isinstance(event, Instance.Deleted):  # terminal: no event of it follows
                del self._instances[event.originator_id]
                meter.deleted(m)  # packed until its billed periods are finalised
        elif isinstance(event, Instance.Requested):
            meter = self.cell(event.cell)
            m = meter.metered(event.name, event.account, event.runtime,
                              (event.billed_vcpu, event.billed_memory_gib),
                              (event.requested_vcpu, event.requested_memory_gib))
            meter.instances[(m.account, m.name)] = m  # (the account's string, shared)
            self._instances[event.originator_id] = (meter, m)
        elif isinstance(event, PriceBook.Opened):
            self._books[event.originator_id] = event.cell
        elif isinstance(event, PriceBook.VersionPublished):
            self.cell(self._books[event.originator_id]).publish(
                {"number": event.number, **event.terms})
        elif isinstance(event, Invoice.InvoiceFinalized):
            self.cell(event.cell).invoiced(event.account)
        elif isinstance(event, BillingCalendar.PeriodClosed):
            self.cell(event.cell).period_closed(event.period)
