"""Billing in the writer (docs/design.md §3.4): an in-memory meter, and the Tick decider that
finalises periods.

The meter is a World observer: it sees every event replayed at start-up and recorded live,
so what it holds is exactly what the log implies. Per cell it keeps each instance's billed
intervals (epoch microseconds, the last one open while the instance is in a billed state),
the price book, the latest closed period, and the instances a late report touched.

A late report is a transition recorded after its cell closed the period it lands in (or the
second just after, where it can merge runs or move a minimum-seconds top-up). Its instance is
marked dirty, remembering its intervals as they were billed; at the next period close the
difference of the two ratings over closed periods becomes adjustment lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.domain.instance import BILLED, Instance
from engine.domain.invoice import BillingCalendar, Invoice, finalized_fields
from engine.domain.price_book import PriceBook
from engine.policies import rating
from engine.policies.spec_catalogue import Spec

if TYPE_CHECKING:
    from engine.context import Context
    from schemas.commands import Tick

US = rating.US_PER_S
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A change at second s can alter seconds >= s - 1 (it may merge with a run ending at s - 1),
# so changes before closed_end + LATE_MARGIN are checked against the closed periods.
LATE_MARGIN_S = 2

Interval = list[Any]  # [t0_us, t1_us | None]


def micros(ts: datetime) -> int:
    d = ts - EPOCH  # integer fields: exact, and cheaper than dividing timedeltas
    return (d.days * 86_400 + d.seconds) * US + d.microseconds


def price_version(v: dict[str, Any]) -> rating.PriceVersion:
    """A published version (PriceBook.VersionPublished terms) as a rating value."""
    runtime_rates = {
        runtime: rating.Rates(Decimal(r["rate_per_vcpu_second"]),
                              Decimal(r["rate_per_gib_second"]))
        for runtime, r in (v.get("runtime_rates") or {}).items()
    }
    return rating.PriceVersion(
        version=v["number"], effective_from=v["effective_from"],
        rate_vcpu_s=Decimal(v["rate_per_vcpu_second"]),
        rate_gib_s=Decimal(v["rate_per_gib_second"]), currency=v["currency"],
        minor_unit=v["minor_unit"], min_seconds=v["min_seconds"],
        grace_seconds=v["grace_seconds"], runtime_rates=runtime_rates)


def periods_touched(t0_us: int, t1_us: int) -> list[str]:
    """Periods holding a second of the non-empty interval [t0, t1)."""
    s0, s1 = t0_us // US, -(-t1_us // US)
    out = [rating.period_of(s0)]
    while (end := rating.period_bounds(out[-1])[1]) < s1:
        out.append(rating.period_of(end))
    return out


@dataclass(slots=True, eq=False)
class Metered:
    name: str
    account: str
    runtime: str
    spec: Spec
    requested: Spec
    intervals: list[Interval] = field(default_factory=list)
    billed_as: list[Interval] | None = None  # intervals as last billed, while dirty
    late: list[str] = field(default_factory=list)  # ids of the late events since then

    def lines(self, intervals: list[Interval], horizon_us: int, book: rating.PriceBook
              ) -> list[rating.InvoiceLine]:
        """Lines with open intervals running to `horizon_us` (past the periods wanted, so a
        run still going gets no minimum-seconds top-up in them)."""
        closed = [(a, b if b is not None else max(a, horizon_us)) for a, b in intervals]
        return rating.rate_instance(self.name, self.account, self.spec, self.runtime, closed,
                                    book, requested=self.requested)


class CellMeter:
    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.versions: list[rating.PriceVersion] = []
        self.book: rating.PriceBook | None = None  # one per cell: it caches unit prices
        self.book_error: str | None = None
        self.closed: str | None = None
        self.closed_end: int | None = None  # first second after the closed periods
        # Keyed by (account, instance_id): instance ids are per account.
        self.instances: dict[tuple[str, str], Metered] = {}
        self.open: dict[tuple[str, str], Metered] = {}  # with an open billed interval
        # Open period -> account -> instances with a closed interval in it.
        self.touched: dict[str, dict[str, set[str]]] = {}
        self.dirty: dict[str, dict[str, Metered]] = {}  # account -> name -> instance

    # --- following the log ----------------------------------------------------------

    def transition(self, m: Metered, state: str, at_us: int, version: int) -> None:
        is_open = bool(m.intervals) and m.intervals[-1][1] is None
        if (state in BILLED) == is_open:
            return  # restarts and moves between unbilled states change nothing billed
        if self.closed_end is not None and at_us < (self.closed_end + LATE_MARGIN_S) * US:
            self._late(m, f"instance/{m.name}#{version}")
        if not is_open:
            m.intervals.append([at_us, None])
            self.open[(m.account, m.name)] = m
            return
        m.intervals[-1][1] = at_us
        del self.open[(m.account, m.name)]
        t0 = m.intervals[-1][0]
        if at_us > t0:
            for p in periods_touched(t0, at_us):
                if self.closed is None or p > self.closed:
                    self.touched.setdefault(p, {}).setdefault(m.account, set()).add(m.name)

    def _late(self, m: Metered, event_id: str) -> None:
        if m.billed_as is None:
            m.billed_as = [list(iv) for iv in m.intervals]
        m.late.append(event_id)
        self.dirty.setdefault(m.account, {})[m.name] = m

    def publish(self, terms: dict[str, Any]) -> None:
        self.versions.append(price_version(terms))
        try:
            self.book = rating.PriceBook(tuple(self.versions))
            self.book_error = None
        except ValueError as exc:  # keep billing on the last valid book; say why it stopped
            self.book_error = str(exc)

    def invoiced(self, account: str) -> None:
        for m in self.dirty.pop(account, {}).values():
            m.billed_as, m.late = None, []

    def period_closed(self, period: str) -> None:
        self.closed = period
        self.closed_end = rating.period_bounds(period)[1]
        for p in [p for p in self.touched if p <= period]:
            del self.touched[p]
        for account in list(self.dirty):  # all were weighed at this close
            self.invoiced(account)

    # --- deciding ---------------------------------------------------------------------

    def due(self, now_us: int) -> str | None:
        """The next period to close, if its end plus grace has passed at `now_us`."""
        if self.book is None:
            return None
        if self.closed_end is not None:
            period = rating.period_of(self.closed_end)
        else:
            period = rating.period_of(self.book.starts[0])
        return period if rating.finalises_at(period, self.book) * US <= now_us else None

    def due_periods(self, now_us: int, at_most: int) -> list[str]:
        """The periods a tick at `now_us` would close, oldest first: at most `at_most` + 1,
        enough to tell that there are too many."""
        due: list[str] = []
        if self.book is None:
            return due
        period = rating.period_of(self.closed_end if self.closed_end is not None
                                  else self.book.starts[0])
        while len(due) <= at_most and rating.finalises_at(period, self.book) * US <= now_us:
            due.append(period)
            period = rating.period_of(rating.period_bounds(period)[1])
        return due

    def invoices(self, period: str, now_us: int) -> list[rating.Invoice]:
        """The invoices closing `period` at `now_us`: its lines, plus adjustments for what
        late reports changed in earlier closed periods."""
        assert self.book is not None
        book = self.book
        end = rating.period_bounds(period)[1]
        horizon = max(now_us, end * US + 1)
        accounts = {a: set(names) for a, names in self.touched.get(period, {}).items()}
        for m in self.open.values():
            if m.intervals[-1][0] < end * US:
                accounts.setdefault(m.account, set()).add(m.name)
        for account in self.dirty:
            accounts.setdefault(account, set())
        out = []
        for account in sorted(accounts):
            lines = [x for name in sorted(accounts[account])
                     for m in [self.instances[(account, name)]]
                     for x in m.lines(m.intervals, horizon, book)
                     if x.period == period]
            adjustments = []
            for _name, m in sorted(self.dirty.get(account, {}).items()):
                assert m.billed_as is not None
                was = [x for x in m.lines(m.billed_as, horizon, book) if x.period < period]
                now = [x for x in m.lines(m.intervals, horizon, book) if x.period < period]
                adjustments += rating.adjustments(
                    was, now, billed_in=period, corrects=m.late,
                    periods={x.period for x in was + now})
            if lines or adjustments:
                out.append(rating.invoice_for(account, period, lines, adjustments))
        return out


class BillingMeter:
    """The World observer: one CellMeter per cell. It reads events only (never the
    aggregates), so it can also run on a bare read of the log (simulations/bench_billing)."""

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
        elif isinstance(event, Instance.Requested):
            meter = self.cell(event.cell)
            m = meter.instances[(event.account, event.name)] = Metered(
                event.name, event.account, event.runtime,
                Spec(event.billed_vcpu, event.billed_memory_gib),
                Spec(event.requested_vcpu, event.requested_memory_gib))
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


def finalise_periods(ctx: Context, tick: Tick) -> str | None:
    """Tick decider: close every period of the tick's cell whose end plus grace has passed,
    oldest first, recording one InvoiceFinalized per account with something to bill."""
    meter = ctx.world.billing.cells.get(tick.cell)
    if meter is None:
        return None
    now_us = micros(tick.now)
    notes = []
    while (period := meter.due(now_us)) is not None:
        invoices = meter.invoices(period, now_us)
        for invoice in invoices:
            ctx.touch(Invoice.create(tick.now, **finalized_fields(tick.cell, invoice)),
                      f"invoice/{invoice.account}/{period}")
        calendar = ctx.world.aggregates.get(BillingCalendar.create_id(tick.cell)) \
            or BillingCalendar.create(tick.now, cell=tick.cell)
        calendar.close(period, len(invoices), tick.now)
        ctx.touch(calendar, f"billing-calendar/{tick.cell}")
        notes.append(f"{period} ({len(invoices)} invoice(s))")
    note = ("finalised " + ", ".join(notes)) if notes else None
    if meter.book_error:  # the handler accepted a version rating refuses: say so every tick
        note = "; ".join(filter(None, [note, "price book invalid, billing on its last "
                                              f"valid versions: {meter.book_error}"]))
    return note
