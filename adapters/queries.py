"""Read-side queries over the projections: what `cis instances`, `cis usage` and
`cis invoices` show."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

from eventsourcing.utils import get_topic

from engine.billing import accrue
from engine.billing.adjust import AdjustmentLine
from engine.billing.explain import (
    Held,
    accrued_held,
    billed_held,
    horizon_past,
    line_window,
)
from engine.billing.invoice import Invoice
from engine.billing.meter import Interval
from engine.billing.periods import (
    EPOCH,
    micros,
    next_period,
    period_at,
    period_bounds,
    period_index,
    period_of,
    periods_between,
)
from engine.billing.price_book import PriceBook as RatingBook
from engine.billing.rate import LineKey
from engine.billing.usage import from_row
from engine.domain.cell_log import CellLog
from engine.domain.invoice import BillingCalendar, adjustment_from_record
from engine.domain.invoice import Invoice as InvoiceRecord
from projections.instances import INSTANCES, InstancesProjection, iso
from projections.invoices import (
    BILLING_PERIODS,
    INVOICE_ADJUSTMENTS,
    INVOICE_LINES,
    INVOICES,
    InvoicesProjection,
    adjustment_record,
    finalised_invoice,
)
from projections.known_at import Known, fold_known
from projections.nodes import GONE, NODE_IDLE, NODE_INSTANCES, NODES
from projections.usage import (
    PRICE_BOOKS,
    USAGE,
    USAGE_INSTANCES,
    USAGE_LATE,
    USAGE_OPEN,
    UsageProjection,
    price_book,
)
from schemas.limits import TIME_MAX, TIME_MIN

# Cost bounds of one query (the README's "Limits"): each is a name in a 422's reason.
QUERY_PAGE_DEFAULT = 100  # items per page of a list, unless `limit` says otherwise
QUERY_PAGE_MAX = 1000  # the largest `limit`
AS_OF_LOOKBACK_PAGE, AS_OF_LOOKBACK_PAGES = 200, 50  # at most 10,000 events back
QUERY_AS_OF_AHEAD = timedelta(days=31)  # how far past the projected position `as_of` may be
QUERY_MAX_PERIODS = 24  # billing periods one usage or invoices query may accrue
QUERY_TIMEOUT_S = 10.0  # the API answers 503 after this long
# An invoice line: N, or INSTANCE[@VERSION] (ASCII: `str.isdigit` also takes "²").
LINE_REF = re.compile(r"[0-9]{1,6}|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(@[0-9]{1,9})?")


class Reader(Protocol):
    """What queries read: an Engine, or the API's snapshot of one."""

    view: Any  # select(table, where), max_tracking_id(name)
    app: Any  # page(after, limit): the event log


class QueryError(ValueError):
    """A query refused before it runs: every reason, as (field, problem)."""

    def __init__(self, reasons: Sequence[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {p}" for f, p in reasons))
        self.reasons = list(reasons)


def check_as_of(as_of: datetime, projected_at: datetime | None, field: str = "as_of") -> None:
    """`as_of` inside [TIME_MIN, TIME_MAX), and at most QUERY_AS_OF_AHEAD past the projected
    position (accruing decades ahead is what made one request take a minute). `field`: the
    parameter named in the reason (the one the caller sent)."""
    if not TIME_MIN <= as_of < TIME_MAX:
        raise QueryError([(field, f"outside the supported window [{iso(TIME_MIN)}, "
                                  f"{iso(TIME_MAX)})")])
    if projected_at is not None and as_of > projected_at + QUERY_AS_OF_AHEAD:
        raise QueryError([("as_of", f"more than QUERY_AS_OF_AHEAD ({QUERY_AS_OF_AHEAD.days} "
                                    f"days) past the projected position {iso(projected_at)}")])


def check_periods(rows: Sequence[dict[str, Any]], closed: dict[str, str],
                  as_of: datetime | None) -> None:
    """Refuse a query that would accrue more than QUERY_MAX_PERIODS open billing periods
    (each interval is rated once per period it spans)."""
    if as_of is None:
        return
    end, months = micros(as_of), set[int]()
    for row in rows:
        last = closed.get(row["cell"])
        floor = period_index(last) + 1 if last else 0  # the month after it
        for t0, t1, *_ in json.loads(row["intervals"]):
            lo = max(period_index(period_at(t0)), floor)
            hi = period_index(period_at(min(end, t1) if t1 is not None else end))
            if hi - lo >= QUERY_MAX_PERIODS:
                months.update(range(lo, lo + QUERY_MAX_PERIODS + 1))
            else:
                months.update(range(lo, hi + 1))
            if len(months) > QUERY_MAX_PERIODS:
                raise _too_many_periods()


def page(items: list[dict[str, Any]], key: Callable[[dict[str, Any]], list[Any]],
         after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` items after the cursor `after`, in key order, and the cursor of the next
    page (None at the end). A cursor is the last key given, opaque to clients."""
    if after is not None:
        try:
            last = json.loads(base64.urlsafe_b64decode(after.encode() + b"=="))
            if not isinstance(last, list):
                raise ValueError(last)
        except (ValueError, binascii.Error, UnicodeError):
            raise QueryError([("cursor", "not a cursor this API gave")]) from None
        try:
            items = [i for i in items if key(i) > last]
        except TypeError:
            raise QueryError([("cursor", "not a cursor of this list")]) from None
    items = sorted(items, key=key)
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    cursor = json.dumps(key(items[-1]), separators=(",", ":")).encode()
    return items, base64.urlsafe_b64encode(cursor).decode().rstrip("=")


def event_time(engine: Reader, notification_id: int | None) -> datetime | None:
    """The time of the event stored under `notification_id` (None for none)."""
    if not notification_id:
        return None
    return _event_time(engine.app, notification_id)


@lru_cache(maxsize=64)
def _event_time(app: Any, notification_id: int) -> datetime:
    # A stored event never changes: its time can be remembered.
    (_, event), = app.page(notification_id - 1, 1)
    return event.timestamp


def newest_event_time(engine: Reader) -> datetime | None:
    """The time the log has reached: the default `as_of` (never the wall clock). A cell
    that never accepted a command stamps its log with TIME_MIN (it has no clock, and borrows
    no other cell's): such entries are skipped, looking back a bounded way."""
    newest = engine.app.recorder.max_notification_id()
    if not newest:
        return None
    end = newest
    for _ in range(AS_OF_LOOKBACK_PAGES):
        page = engine.app.page(max(0, end - AS_OF_LOOKBACK_PAGE), end - max(
            0, end - AS_OF_LOOKBACK_PAGE))
        found = next((e.timestamp for _, e in reversed(page) if e.timestamp > TIME_MIN), None)
        if found is not None or not page or page[0][0] <= 1:
            return found if found is not None else TIME_MIN
        end = page[0][0] - 1
    return TIME_MIN


def default_as_of(engine: Reader, account: str) -> datetime | None:
    """The default `as_of` of an account's answers: the newest accepted event of the
    account's cells, i.e. the newest of their clocks (each cell's log is stamped with its
    clock, §2.9). It depends neither on batch size nor on which cell spoke last, and one
    cell's clock running behind never hides what another recorded. An account with nothing
    yet has none: other tenants' cells would tell it when they were last active."""
    clocks = _clocks(engine, _cells_of(engine, account))
    return max(clocks.values(), default=None)


def _cells_of(engine: Reader, account: str) -> set[str]:
    view = engine.view
    return ({r["cell"] for r in view.select(INSTANCES, {"account": account})}
            | {r["cell"] for r in view.select(INVOICES, {"account": account})})


def _clocks(engine: Reader, cells: set[str]) -> dict[str, datetime]:
    """Each cell's clock: as known at a time (a `Known` fold), or its newest stamp that the
    read models have reached (so an answer stays at one point of the log, like its rows).
    Stamps are looked for backwards, a window at a time, doubling."""
    if isinstance(engine, Known):
        return {c: t for c, t in engine.clocks.items() if c in cells}
    reached = min((engine.view.max_tracking_id(p.name) or 0 for p in _BILLING), default=0)
    logs = {CellLog.create_id(c): c for c in cells}
    found: dict[str, datetime] = {}
    stop, width = reached, CLOCK_LOOKBACK
    while stop > 0 and len(found) < len(logs):
        start = max(0, stop - width)
        for _, event in reversed(engine.app.page(start, stop - start, _STAMPS, stop)):
            cell = logs.get(event.originator_id)
            if cell is not None:
                found.setdefault(cell, event.timestamp)
        stop, width = start, min(2 * width, CLOCK_LOOKBACK_MAX)
    return found


# Events: the first window searched for cells' stamps, and the widest (one window's stamps
# are decoded at once).
CLOCK_LOOKBACK, CLOCK_LOOKBACK_MAX = 1000, 16_000
_STAMPS = (get_topic(CellLog.Opened), get_topic(CellLog.CommandsHandled))
_BILLING = (InstancesProjection, UsageProjection, InvoicesProjection)


def known_at(engine: Reader, at: datetime | int, account: str | None = None) -> Known:
    """The read models exactly as they stood at `at`, a time or a log position: folded from
    the events recorded up to it only (projections/known_at.py), ready for the same
    queries. With an `account`, only its cells are folded (its answers need no other)."""
    if isinstance(at, datetime):
        check_as_of(at, None, "known_at")
    # An account that never had a cell has nothing to fold: never the whole log for it.
    cells = _cells_of(engine, account) if account else None
    return fold_known(engine.app, [p() for p in _BILLING], at, cells)


def instances(engine: Reader, account: str | None = None) -> list[dict[str, Any]]:
    return engine.view.select(INSTANCES, {"account": account} if account else None)


def states(engine: Reader) -> Counter[str]:
    return Counter(row["state"] for row in engine.view.select(INSTANCES))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def nodes(engine: Reader, cell: str | None = None, pool: str | None = None,
          state: str | None = None, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Per node (operator view): model, pool, ASG, state and hold, allocation per dimension
    (used of capacity), the instances on it, and how long it has held none (`idle_seconds`
    up to `as_of`, default the time of the nodes projection's position; none for a node not
    yet ready, busy, or gone)."""
    if as_of is None:
        as_of = event_time(engine, engine.view.max_tracking_id("nodes"))
    where = {k: v for k, v in (("cell", cell), ("pool", pool), ("state", state)) if v}
    on: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in engine.view.select(NODE_INSTANCES, {"cell": cell} if cell else None):
        if row["node_id"] is not None:
            on.setdefault((row["cell"], row["node_id"]), []).append(row)
    left = {(r["cell"], r["node_id"]): r["last_left_at"]
            for r in engine.view.select(NODE_IDLE, {"cell": cell} if cell else None)}
    out = []
    for node in engine.view.select(NODES, where):
        key = (node["cell"], node["node_id"])
        here = sorted(on.get(key, []), key=lambda r: (r["account"], r["instance_id"]))
        capacity: dict[str, int] = json.loads(node["capacity"])
        used = dict.fromkeys(capacity, 0)
        for row in here:
            for dimension, amount in json.loads(row["demand"]).items():
                used[dimension] = used.get(dimension, 0) + amount
        idle_since = None
        if not here and node["ready_at"] is not None and node["state"] not in GONE:
            idle_since = max(_time(t) for t in (node["ready_at"], left.get(key)) if t)
        idle_seconds = None
        if idle_since is not None and as_of is not None:
            idle_seconds = max(0, int((as_of - idle_since).total_seconds()))
        out.append({
            "cell": node["cell"], "node_id": node["node_id"], "pool": node["pool"],
            "model": node["model"], "asg": node["asg"], "state": node["state"],
            "held_by": node["held_by"], "reason": node["reason"],
            "labels": json.loads(node["labels"]),
            "allocation": {d: {"used": used[d], "capacity": capacity.get(d)}
                           for d in sorted(used)},
            "instances": [{"account": r["account"], "instance_id": r["instance_id"],
                           "state": r["state"], "placed_at": r["placed_at"]} for r in here],
            "requested_at": node["requested_at"], "ready_at": node["ready_at"],
            "state_since": node["state_since"], "ended_at": node["ended_at"],
            "idle_since": iso(idle_since) if idle_since else None, "idle_seconds": idle_seconds,
        })
    out.sort(key=lambda n: (n["cell"], n["node_id"]))
    return out


def usage(engine: Reader, account: str, as_of: datetime | None = None,
          period: str | None = None) -> dict[str, Any]:
    """Billed seconds and amounts per instance of one account, accrued up to `as_of`: over
    its whole life, or only in `period` (which reads that period's rows and the open ones)."""
    as_of = as_of or default_as_of(engine, account)
    view = engine.view
    books = _books(engine)
    where = {"account": account, **({"period": period} if period else {})}
    rows = _one_per_instance([*view.select(USAGE, where),
                              *view.select(USAGE_OPEN, {"account": account})])
    check_periods(rows, _closed(engine), as_of)
    lines, totals = [], dict[str, Decimal]()
    for row in rows:
        seconds, amount, currency = 0, Decimal(0), None
        book = books.get(row["cell"])
        rated = from_row(row).accrued(micros(as_of), book) \
            if as_of is not None and book is not None else []
        for line in rated:
            if period is None or line.period == period:
                seconds += line.seconds + line.topup_seconds
                amount += line.amount
                currency = line.currency
        if period is not None and row["period"] is None and currency is None:
            continue  # open, with nothing in this period
        if currency:
            totals[currency] = totals.get(currency, Decimal(0)) + amount
        lines.append({
            "cell": row["cell"], "instance_id": row["instance_id"], "state": row["state"],
            "requested": f"{row['requested_vcpu']} vCPU / {row['requested_memory_gib']} GiB",
            "billed_spec": f"{row['billed_vcpu']} vCPU / {row['billed_memory_gib']} GiB",
            "billed_seconds": seconds, "amount": str(amount), "currency": currency,
        })
    lines.sort(key=lambda x: (x["cell"], x["instance_id"]))
    return {"account": account, "as_of": as_of.isoformat() if as_of else None,
            "instances": lines, "totals": {c: str(a) for c, a in totals.items()}}


def _one_per_instance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An instance's copies (one per period, and the open one) hold the same usage; keep
    one, with its period if it has one here (None: only open)."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        found.setdefault(row["id"], {"period": None, **row})
    return list(found.values())


def _books(engine: Reader) -> dict[str, RatingBook | None]:
    return {row["cell"]: price_book(row) for row in engine.view.select(PRICE_BOOKS)}


# --- invoices ------------------------------------------------------------------------------


def _spec(vcpu: Any, gib: Any) -> str:
    return f"{vcpu} vCPU / {gib} GiB"


def _render_adjustment(a: AdjustmentLine) -> dict[str, Any]:
    return {"period": a.period, "instance_id": a.instance_id, "price_version": a.price_version,
            "billed_before": str(a.finalised_amount), "recomputed": str(a.recomputed_amount),
            "amount": str(a.amount), "corrects": list(a.corrects)}


def _render(cell: str, invoice: Invoice, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "cell": cell, "account": invoice.account, "period": invoice.period, "status": status,
        **extra, "currency": invoice.currency, "total": str(invoice.total),
        "content_hash": invoice.content_hash,
        "lines": [{
            "line": n, "instance_id": x.instance_id, "price_version": x.price_version,
            "runtime": x.runtime, "requested": _spec(x.requested.vcpu, x.requested.memory_gib),
            "billed_spec": _spec(x.spec.vcpu, x.spec.memory_gib),
            "rate_vcpu_s": str(x.rate_vcpu_s), "rate_gib_s": str(x.rate_gib_s),
            "price_per_second": str(x.price_per_second), "seconds": x.seconds,
            "topup_seconds": x.topup_seconds, "amount": str(x.amount),
        } for n, x in enumerate(invoice.lines, 1)],
        "adjustments": [_render_adjustment(a) for a in invoice.adjustments],
    }


def _closed(engine: Reader) -> dict[str, str]:
    """Each cell's latest finalised period."""
    closed: dict[str, str] = {}
    for row in engine.view.select(BILLING_PERIODS):
        closed[row["cell"]] = max(closed.get(row["cell"], row["period"]), row["period"])
    return closed


def invoices(engine: Reader, account: str, period: str | None = None,
             as_of: datetime | None = None) -> dict[str, Any]:
    """The account's invoices: finalised ones as recorded (their content hash checked against
    the rows), open ones accrued up to `as_of` (default: `default_as_of`). With a
    `period`, only that period's rows are read (and the instances billing now)."""
    as_of = as_of or default_as_of(engine, account)
    out = _finalised(engine, account, period)
    if as_of is not None:
        out += [_render(cell, invoice, "open", as_of=iso(as_of))
                for cell, invoice in _open(engine, account, period, as_of)]
    out.sort(key=lambda i: (i["period"], i["cell"]))
    return {"account": account, "as_of": iso(as_of) if as_of else None, "invoices": out}


def _finalised(engine: Reader, account: str, period: str | None) -> list[dict[str, Any]]:
    view = engine.view
    where = {"account": account, **({"period": period} if period else {})}
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for x in view.select(INVOICE_LINES, where):
        lines.setdefault((x["cell"], x["period"]), []).append(x)
    adjustments: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in view.select(INVOICE_ADJUSTMENTS,
                         {"account": account, **({"billed_in": period} if period else {})}):
        adjustments.setdefault((a["cell"], a["billed_in"]), []).append(a)
    out = []
    for row in view.select(INVOICES, where):
        key = (row["cell"], row["period"])
        rebuilt = finalised_invoice(row, lines.get(key, []), adjustments.get(key, []))
        out.append(_render(row["cell"], rebuilt, "finalised", finalised_at=row["finalised_at"],
                           hash_verified=rebuilt.content_hash == row["content_hash"],
                           chain_head=_chain_head(engine, row)))
    return out


def _chain_head(engine: Reader, row: dict[str, Any]) -> str | None:
    """The cell's hash-chain head the invoice pins (docs/design.md §2.11): the stored link of
    its finalisation event, which covers that event and all before it in its cell. An
    invoice finalised before this rule recorded the head before its batch: that one, as
    handed out then. Read from the store, so no projection holds a copy."""
    invoice_id = InvoiceRecord.create_id(row["cell"], row["account"], row["period"])
    finalised = next(iter(engine.app.events.get(invoice_id, lte=1)), None)
    if (recorded := getattr(finalised, "chain_head", None)) is not None:
        return recorded
    link = engine.app.chained_recorder.link_of(invoice_id, 1)
    return None if link is None else link.hex()


def _open(engine: Reader, account: str, period: str | None, as_of: datetime,
          lines_too: bool = True) -> list[tuple[str, Invoice]]:
    """(cell, invoice) for the account's open invoices accrued to `as_of`: every open
    period up to it, or only `period`. The first open period of a cell carries the pending
    adjustments. Reads the period rows wanted, the open rows and the late ones."""
    view, as_of_us, closed = engine.view, micros(as_of), _closed(engine)
    books = {cell: book for cell, book in _books(engine).items() if book is not None}
    wanted: dict[str, list[str]] = {}
    for cell, book in books.items():
        first = next_period(closed[cell]) if cell in closed else period_of(book.starts[0])
        periods = periods_between(first, period_at(as_of_us)) \
            if lines_too else []
        if period is None and len(periods) > QUERY_MAX_PERIODS:
            raise _too_many_periods()
        wanted[cell] = [p for p in periods if period is None or p == period]
    rows: dict[str, list[dict[str, Any]]] = {}
    for p in sorted({p for periods in wanted.values() for p in periods}):
        for row in view.select(USAGE, {"account": account, "period": p}):
            if p in wanted.get(row["cell"], ()):
                rows.setdefault(row["cell"], []).append(row)
    if lines_too:
        for row in view.select(USAGE_OPEN, {"account": account}):
            rows.setdefault(row["cell"], []).append(row)
    out = []
    for cell, book in sorted(books.items()):
        lines = accrue.accrued_lines([from_row(r) for r in _one_per_instance(rows.get(cell, []))],
                                     book, as_of_us, wanted[cell])
        adjustments = []
        if cell in closed and (period is None or period == next_period(closed[cell])):
            adjustments = _pending(engine, account, cell, book, closed[cell], as_of_us)
        out += [(cell, invoice) for invoice in accrue.open_invoices(account, lines, adjustments)]
    return out


def _pending(engine: Reader, account: str, cell: str, book: RatingBook, closed: str,
             as_of_us: int) -> list[AdjustmentLine]:
    """Adjustments pending in a cell: only instances a late report changed since its last
    close can differ from what was billed (the late rows), so only they are re-rated, against
    their own finalised lines and adjustments, read period by period."""
    view = engine.view
    candidates = [from_row(r) for r in view.select(USAGE_LATE, {"account": account,
                                                                "closed": closed})
                  if r["cell"] == cell]
    billed: dict[LineKey, Decimal] = {}
    for usage in candidates:
        mine = {"account": account, "instance_id": usage.name}
        for p in accrue.billed_periods(usage, closed):
            found = [(p, x) for x in view.select(INVOICE_LINES, {**mine, "period": p})] + [
                (a["period"], a) for a in view.select(INVOICE_ADJUSTMENTS,
                                                      {**mine, "billed_in": p})]
            for corrected, x in found:
                if x["cell"] == cell:
                    key = (corrected, account, usage.name, int(x["price_version"]))
                    billed[key] = billed.get(key, Decimal(0)) + Decimal(x["amount"])
    return accrue.pending(candidates, book, closed, billed, as_of_us)


def _too_many_periods() -> QueryError:
    return QueryError([("as_of", f"would accrue more than QUERY_MAX_PERIODS "
                                 f"({QUERY_MAX_PERIODS}) open billing periods; "
                                 "ask an earlier as_of (or finalise periods)")])


def explain(engine: Reader, account: str, line: str, period: str | None = None,
            as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Provenance of invoice lines — `N` (the N-th row of the period's invoice, its lines
    then its adjustments; default period: the latest) or `INSTANCE[@VERSION]` (its lines
    and adjustments) — that adds up to each exactly (engine/billing/explain.py): per billed
    interval, the events that opened and closed it, the seconds and top-up it gives the
    line. A finalised line is explained with the intervals it was billed on (as at its
    period's close), an open one with those known now, cut at `as_of`; an adjustment with
    both sides: as billed before (the previous close) and as recomputed."""
    as_of = as_of or default_as_of(engine, account)
    if not LINE_REF.fullmatch(line):
        raise QueryError([("line", "a line number N, or INSTANCE[@VERSION]")])
    found = invoices(engine, account, period, as_of)["invoices"]
    picked: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    if line.isascii() and line.isdigit():
        latest = max((i["period"] for i in found), default=None)
        for i in [i for i in found if i["period"] == latest][:1]:
            rows = [("line", x) for x in i["lines"]] + [("adjustment", a)
                                                          for a in i["adjustments"]]
            picked += [(i, *rows[int(line) - 1])] if 1 <= int(line) <= len(rows) else []
    else:
        name, _, version = line.partition("@")
        picked = [(i, kind, x) for i in found
                  for kind, xs in (("line", i["lines"]), ("adjustment", i["adjustments"]))
                  for x in xs if x["instance_id"] == name
                  and (not version or str(x["price_version"]) == version)]
    books = _books(engine)
    closes = _Closes(engine, account)
    out = []
    for invoice, kind, x in picked:
        book = books[invoice["cell"]]
        assert book is not None  # it billed these
        head = {"cell": invoice["cell"], "period": invoice["period"],
                "status": invoice["status"], "kind": kind, "invoice_total": invoice["total"]}
        if kind == "line":
            out.append({**head, "line": x, **_line_provenance(
                engine, account, invoice, x, book, closes, as_of),
                "adjustments": _adjustments_naming(engine, account, x["instance_id"], as_of)})
        else:
            out.append({**head, "adjustment": x, **_adjustment_provenance(
                engine, account, invoice, x, book, closes, as_of)})
    return out


class _Closes:
    """An account's instances as they were at a cell's period close: what its lines were
    billed on. Each close asked for is one fold of the log up to it (the usage projection
    only, of that cell only), remembered for the query."""

    def __init__(self, engine: Reader, account: str):
        self.engine, self.account = engine, account
        self.folds: dict[tuple[str, str], Known] = {}

    def intervals(self, cell: str, period: str, instance_id: str) -> list[Interval]:
        key = (cell, period)
        if key not in self.folds:
            def closes(event: Any) -> bool:
                return (isinstance(event, BillingCalendar.PeriodClosed) and event.cell == cell
                        and event.period == period)
            self.folds[key] = fold_known(self.engine.app, [UsageProjection()], None, {cell},
                                         until=closes)
        rows = self.folds[key].view.select(USAGE_INSTANCES, {
            "account": self.account, "cell": cell, "instance_id": instance_id})
        return json.loads(rows[0]["intervals"]) if rows else []


def _line_provenance(engine: Reader, account: str, invoice: dict[str, Any],
                     x: dict[str, Any], book: RatingBook, closes: _Closes,
                     as_of: datetime | None) -> dict[str, Any]:
    lo, hi = line_window(book, invoice["period"], x["price_version"])
    if invoice["status"] == "finalised":
        intervals = closes.intervals(invoice["cell"], invoice["period"], x["instance_id"])
        return _provenance(billed_held(intervals, lo, hi, book),
                           f"as at the close of {invoice['period']}")
    assert as_of is not None  # an open invoice is accrued to one
    row = _usage_row(engine, account, invoice["cell"], invoice["period"], x["instance_id"])
    return _provenance(accrued_held(json.loads(row["intervals"]), lo, hi, micros(as_of), book),
                       f"as known, accrued to {iso(as_of)}")


def _adjustment_provenance(engine: Reader, account: str, invoice: dict[str, Any],
                           a: dict[str, Any], book: RatingBook, closes: _Closes,
                           as_of: datetime | None) -> dict[str, Any]:
    """Both sides of an adjustment billed in `invoice`: the corrected line as it was billed
    before (at the close before the invoice's period: its finalised amount plus the
    adjustments since) and as recomputed (at the invoice's close, or as known now for a
    pending one), each rated and explained."""
    cell, billed_in, name = invoice["cell"], invoice["period"], a["instance_id"]
    lo, hi = line_window(book, a["period"], a["price_version"])
    usage = from_row(_usage_row(engine, account, cell, a["period"], name))
    previous = period_of(period_bounds(billed_in)[0] - 1)
    before = closes.intervals(cell, previous, name)
    if invoice["status"] == "finalised":
        after, rated_on = closes.intervals(cell, billed_in, name), f"as at the close of {billed_in}"
    else:
        after, rated_on = usage.intervals, "as known now"
    key = (a["period"], account, name, a["price_version"])
    index = next(i for i, v in enumerate(book.versions) if v.version == a["price_version"])
    price = book.unit_price(index, usage.runtime, usage.spec)[1]
    out = {}
    for side, intervals, on in (("billed_before", before, f"as at the close of {previous}"),
                                ("recomputed", after, rated_on)):
        rated = [x for x in usage.lines(intervals, horizon_past(intervals, hi), book)
                 if x.key == key]
        out[side] = {**_provenance(billed_held(intervals, lo, hi, book), on),
                     "price_per_second": str(price),
                     "amount": str(rated[0].amount if rated else 0)}
    return out


def _provenance(held: list[Held], billed_on: str) -> dict[str, Any]:
    return {"billed_on": billed_on, "intervals": [{
        "opened_by": h.opened_by, "opened_at": _at(h.opened_at_us), "closed_by": h.closed_by,
        "closed_at": _at(h.closed_at_us) if h.closed_at_us is not None else None,
        "seconds_in_line": h.seconds_in_line, "topup_seconds": h.topup_seconds,
    } for h in held], "seconds": sum(h.seconds_in_line for h in held),
        "topup_seconds": sum(h.topup_seconds for h in held)}


def _usage_row(engine: Reader, account: str, cell: str, period: str, instance_id: str
               ) -> dict[str, Any]:
    """The instance's usage in the period (its open row if its interval is still going)."""
    # Instance ids are per account: another account may use the same name in the cell.
    where = {"account": account, "cell": cell, "instance_id": instance_id}
    view = engine.view
    # Every copy holds the same usage; the last resort is a finalised line whose seconds a
    # late report has since moved out of its period.
    return (view.select(USAGE, {**where, "period": period}) or view.select(USAGE_OPEN, where)
            or view.select(USAGE, where))[0]


def _adjustments_naming(engine: Reader, account: str, instance_id: str,
                        as_of: datetime | None) -> list[dict[str, Any]]:
    """Every adjustment correcting the instance: finalised ones, then those pending."""
    books = _books(engine)
    found: list[tuple[str, str, AdjustmentLine]] = []
    for row in engine.view.select(INVOICE_ADJUSTMENTS, {"account": account,
                                                        "instance_id": instance_id}):
        book = books[row["cell"]]
        assert book is not None  # it billed these
        found.append((row["billed_in"], row["cell"], adjustment_from_record(
            adjustment_record(row), account, row["billed_in"], row["currency"],
            book.minor_unit)))
    if as_of is not None:
        found += [(a.billed_in, cell, a) for cell, invoice in
                  _open(engine, account, None, as_of, lines_too=False)
                  for a in invoice.adjustments if a.instance_id == instance_id]
    found.sort(key=lambda f: (f[0], f[1], f[2].period, f[2].price_version, f[2].corrects,
                              f[2].amount))
    return [_render_adjustment(a) for _, _, a in found]


def _at(t_us: int) -> str:
    return iso(EPOCH + timedelta(microseconds=t_us))
