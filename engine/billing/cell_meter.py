"""One cell's billing in the writer (docs/design.md §3.4): each instance's billed intervals,
the price book, the latest closed period, and the instances a late report touched.

A late report is a transition recorded after its cell closed the period it lands in (or the
second just after, where it can merge runs or move a minimum-seconds top-up). Its instance
remembers its intervals as they were billed; at the next period close the difference of the
two ratings over closed periods becomes adjustment lines.

A deleted instance with no late report pending bills the same forever after: it leaves
`instances` for `settled`, packed, until every period it billed in is finalised (§7.4).

Plain data (no lambdas, no closures), so the writer's state pickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.billing import meter
from engine.billing.adjust import adjustments
from engine.billing.invoice import Invoice, invoice_for
from engine.billing.periods import (
    US_PER_S,
    next_period,
    period_bounds,
    period_of,
    periods_of_seconds,
)
from engine.billing.price_book import PriceBook, PriceVersion, finalises_at, price_version
from engine.billing.settled import Settled
from engine.billing.usage import Usage
from engine.policies.spec_catalogue import Spec


@dataclass(slots=True, eq=False)
class Metered(Usage):
    billed_as: list[meter.Interval] | None = None  # intervals as last billed, while dirty
    late: list[str] = field(default_factory=list)  # ids of the late events since then
    deleted: bool = False  # settled once no late report waits on it


class CellMeter:
    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.versions: list[PriceVersion] = []
        self.book: PriceBook | None = None  # one per cell: it caches unit prices
        self.book_error: str | None = None
        self.closed: str | None = None
        self.closed_end: int | None = None  # first second after the closed periods
        # Keyed by (account, instance_id): instance ids are per account. Not deleted, or
        # deleted with a late report pending.
        self.instances: dict[tuple[str, str], Metered] = {}
        self.settled = Settled()  # deleted, packed, billed in a period not yet finalised
        self.open: dict[tuple[str, str], Metered] = {}  # with an open billed interval
        # Open period -> account -> instances with a closed interval in it.
        self.touched: dict[str, dict[str, set[str]]] = {}
        self.dirty: dict[str, dict[str, Metered]] = {}  # account -> name -> instance
        # The values a month of instances repeat, held once each (docs/design.md §7.4).
        self.values: dict[tuple[str, ...], Any] = {}

    def metered(self, name: str, account: str, runtime: str, billed: tuple[Any, Any],
                requested: tuple[Any, Any]) -> Metered:
        """A new instance's entry. The meter holds every instance billed in the open month
        (30 days of 100,000 launches: 3M), so accounts, runtimes and sizes are shared: two
        specs of two Decimals each cost ~500 bytes an instance. Shared by spelling, not by
        value ("0.5" and "0.50" stay apart), so no answer depends on which came first."""
        return Metered(name, self._shared(account), self._shared(runtime),
                       self._spec(*billed), self._spec(*requested))

    def _shared(self, text: str) -> str:
        return self.values.setdefault((text,), text)  # type: ignore[no-any-return]

    def _spec(self, vcpu: Any, memory_gib: Any) -> Spec:
        key = ("spec", str(vcpu), str(memory_gib))
        found = self.values.get(key)
        if found is None:
            found = self.values[key] = Spec(vcpu, memory_gib)
        return found  # type: ignore[no-any-return]

    # --- following the log ----------------------------------------------------------

    def transition(self, m: Metered, state: str, at_us: int, version: int) -> None:
        if not meter.changes(m.intervals, state):
            return  # restarts and moves between unbilled states change nothing billed
        if meter.is_late(at_us, self.closed_end):
            self._late(m, m.event_id(version))
        key = (m.account, m.name)
        if meter.step(m.intervals, state, at_us) == meter.OPENED:
            self.open[key] = m
            return
        del self.open[key]
        t0 = m.intervals[-1][0]
        if at_us > t0:
            for p in periods_of_seconds(*meter.seconds_of(t0, at_us)):
                if self.closed is None or p > self.closed:
                    self.touched.setdefault(p, {}).setdefault(m.account, set()).add(m.name)

    def deleted(self, m: Metered) -> None:
        """`m` was deleted (after its last transition): nothing billed of it changes again."""
        m.deleted = True
        if m.billed_as is None:
            self._settle(m)

    def _settle(self, m: Metered) -> None:
        """Move a deleted instance with no late report pending out of the dicts: packed if a
        period not yet finalised bills it, dropped if none does."""
        del self.instances[(m.account, m.name)]
        for p, by_account in list(self.touched.items()):
            names = by_account.get(m.account)
            if names is not None and m.name in names:  # a close of p now finds it in settled
                names.remove(m.name)
                if not names:
                    del by_account[m.account]
                    if not by_account:
                        del self.touched[p]
        if any(self.closed_end is None or iv[1] >= self.closed_end * US_PER_S
               for iv in m.intervals):
            self.settled.add(m)

    def _late(self, m: Metered, event_id: str) -> None:
        if m.billed_as is None:
            m.billed_as = [list(iv) for iv in m.intervals]
        m.late.append(event_id)
        self.dirty.setdefault(m.account, {})[m.name] = m

    def publish(self, terms: dict[str, Any]) -> None:
        self.versions.append(price_version(terms))
        try:
            self.book = PriceBook(tuple(self.versions))
            self.book_error = None
        except ValueError as exc:  # keep billing on the last valid book; say why it stopped
            self.book_error = str(exc)

    def invoiced(self, account: str) -> None:
        for m in self.dirty.pop(account, {}).values():
            m.billed_as, m.late = None, []
            if m.deleted:
                self._settle(m)

    def period_closed(self, period: str) -> None:
        self.closed = period
        self.closed_end = period_bounds(period)[1]
        for p in [p for p in self.touched if p <= period]:
            del self.touched[p]
        for account in list(self.dirty):  # all were weighed at this close
            self.invoiced(account)
        self.settled.finalised_before(self.closed_end * US_PER_S)

    # --- deciding ---------------------------------------------------------------------

    def due_periods(self, now_us: int, at_most: int) -> list[str]:
        """The periods a tick at `now_us` would close, oldest first: at most `at_most` + 1,
        enough to tell that there are too many."""
        due: list[str] = []
        if self.book is None:
            return due
        period = period_of(self.closed_end if self.closed_end is not None
                           else self.book.starts[0])
        while len(due) <= at_most and finalises_at(period, self.book) * US_PER_S <= now_us:
            due.append(period)
            period = next_period(period)
        return due

    def due(self, now_us: int) -> str | None:
        """The next period to close, if its end plus grace has passed at `now_us`."""
        due = self.due_periods(now_us, 0)
        return due[0] if due else None

    def invoices(self, period: str, now_us: int) -> list[Invoice]:
        """The invoices closing `period` at `now_us`: its lines, plus adjustments for what
        late reports changed in earlier closed periods."""
        assert self.book is not None
        book = self.book
        end = period_bounds(period)[1]
        horizon = max(now_us, end * US_PER_S + 1)
        # Account -> name -> the instances billed in the period: touched, open, or settled.
        billed: dict[str, dict[str, Usage]] = {
            a: {name: self.instances[(a, name)] for name in names}
            for a, names in self.touched.get(period, {}).items()}
        for m in self.open.values():
            if m.intervals[-1][0] < end * US_PER_S:
                billed.setdefault(m.account, {})[m.name] = m
        for u in self.settled.touching(period):
            billed.setdefault(u.account, {})[u.name] = u
        for account in self.dirty:
            billed.setdefault(account, {})
        out = []
        for account in sorted(billed):
            usages = billed[account]
            lines = [x for name in sorted(usages) for u in [usages[name]]
                     for x in u.lines(u.intervals, horizon, book) if x.period == period]
            adjusted = []
            for _name, m in sorted(self.dirty.get(account, {}).items()):
                assert m.billed_as is not None
                was = [x for x in m.lines(m.billed_as, horizon, book) if x.period < period]
                now = [x for x in m.lines(m.intervals, horizon, book) if x.period < period]
                adjusted += adjustments(was, now, billed_in=period, corrects=m.late,
                                        periods={x.period for x in was + now})
            if lines or adjusted:
                out.append(invoice_for(account, period, lines, adjusted))
        return out
