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

from engine.billing import EPOCH, micros
from engine.policies import rating
from projections.instances import INSTANCES, iso
from projections.invoices import (
    BILLING_PERIODS,
    INVOICE_ADJUSTMENTS,
    INVOICE_LINES,
    INVOICES,
    billed_so_far,
    finalised_invoice,
    open_invoices,
)
from projections.nodes import GONE, NODE_IDLE, NODE_INSTANCES, NODES
from projections.usage import PRICE_BOOKS, USAGE, price_book, rate_usage
from schemas.limits import TIME_MAX, TIME_MIN

# Cost bounds of one query (the README's "Limits"): each is a name in a 422's reason.
QUERY_PAGE_DEFAULT = 100  # items per page of a list, unless `limit` says otherwise
QUERY_PAGE_MAX = 1000  # the largest `limit`
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


def check_as_of(as_of: datetime, projected_at: datetime | None) -> None:
    """`as_of` inside [TIME_MIN, TIME_MAX), and at most QUERY_AS_OF_AHEAD past the projected
    position (accruing decades ahead is what made one request take a minute)."""
    if not TIME_MIN <= as_of < TIME_MAX:
        raise QueryError([("as_of", f"outside the supported window [{iso(TIME_MIN)}, "
                                    f"{iso(TIME_MAX)})")])
    if projected_at is not None and as_of > projected_at + QUERY_AS_OF_AHEAD:
        raise QueryError([("as_of", f"more than QUERY_AS_OF_AHEAD ({QUERY_AS_OF_AHEAD.days} "
                                    f"days) past the projected position {iso(projected_at)}")])


def _month(t_us: int) -> int:
    t = EPOCH + timedelta(microseconds=t_us)
    return t.year * 12 + t.month - 1


def check_periods(rows: Sequence[dict[str, Any]], closed: dict[str, str],
                  as_of: datetime | None) -> None:
    """Refuse a query that would accrue more than QUERY_MAX_PERIODS open billing periods
    (each interval is rated once per period it spans)."""
    if as_of is None:
        return
    end, months = micros(as_of), set[int]()
    for row in rows:
        last = closed.get(row["cell"])
        floor = int(last[:4]) * 12 + int(last[5:7]) if last else 0  # the month after it
        for t0, t1, *_ in json.loads(row["intervals"]):
            lo, hi = max(_month(t0), floor), _month(min(end, t1) if t1 is not None else end)
            if hi - lo >= QUERY_MAX_PERIODS:
                months.update(range(lo, lo + QUERY_MAX_PERIODS + 1))
            else:
                months.update(range(lo, hi + 1))
            if len(months) > QUERY_MAX_PERIODS:
                raise QueryError([("as_of", f"would accrue more than QUERY_MAX_PERIODS "
                                            f"({QUERY_MAX_PERIODS}) open billing periods; "
                                            "ask an earlier as_of (or finalise periods)")])


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
    """The time the log has reached: the default `as_of` (never the wall clock)."""
    return event_time(engine, engine.app.recorder.max_notification_id())


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


def usage(engine: Reader, account: str, as_of: datetime | None = None) -> dict[str, Any]:
    """Billed seconds and amounts per instance of one account, accrued up to `as_of`."""
    as_of = as_of or newest_event_time(engine)
    books = {row["cell"]: price_book(row) for row in engine.view.select(PRICE_BOOKS)}
    lines = []
    totals: dict[str, Decimal] = {}
    rows = engine.view.select(USAGE, {"account": account})
    check_periods(rows, _closed(engine), as_of)
    for row in rows:
        seconds = 0
        amount = Decimal(0)
        currency = None
        book = books.get(row["cell"])
        if as_of is not None and book is not None:
            for line in rate_usage(row, book, as_of):
                seconds += line.seconds + line.topup_seconds
                amount += line.amount
                currency = line.currency
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


# --- invoices ------------------------------------------------------------------------------


def _spec(vcpu: Any, gib: Any) -> str:
    return f"{vcpu} vCPU / {gib} GiB"


def _render(cell: str, invoice: rating.Invoice, status: str, **extra: Any) -> dict[str, Any]:
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
        "adjustments": [{
            "period": a.period, "instance_id": a.instance_id, "price_version": a.price_version,
            "billed_before": str(a.finalised_amount), "recomputed": str(a.recomputed_amount),
            "amount": str(a.amount), "corrects": list(a.corrects),
        } for a in invoice.adjustments],
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
    the rows), open ones accrued up to `as_of` (default: the newest event's time)."""
    as_of = as_of or newest_event_time(engine)
    view = engine.view
    mine = {"account": account}
    lines, adjustments = view.select(INVOICE_LINES, mine), view.select(INVOICE_ADJUSTMENTS, mine)
    out = []
    for row in view.select(INVOICES, mine):
        if period is None or row["period"] == period:
            key = (row["cell"], row["period"])
            rebuilt = finalised_invoice(
                row, [x for x in lines if (x["cell"], x["period"]) == key],
                [a for a in adjustments if (a["cell"], a["billed_in"]) == key])
            out.append(_render(row["cell"], rebuilt, "finalised",
                               finalised_at=row["finalised_at"],
                               hash_verified=rebuilt.content_hash == row["content_hash"]))
    closed = _closed(engine)
    usage_rows: dict[str, list[dict[str, Any]]] = {}
    rows = view.select(USAGE, mine)
    check_periods(rows, closed, as_of)
    for row in rows:
        usage_rows.setdefault(row["cell"], []).append(row)
    billed = billed_so_far(lines, adjustments)
    for book_row in view.select(PRICE_BOOKS):
        cell, book = book_row["cell"], price_book(book_row)
        if as_of is None or book is None or cell not in usage_rows:
            continue
        for invoice in open_invoices(account, cell, usage_rows[cell], book, closed.get(cell),
                                     billed, micros(as_of)):
            if period is None or invoice.period == period:
                out.append(_render(cell, invoice, "open", as_of=iso(as_of)))
    out.sort(key=lambda i: (i["period"], i["cell"]))
    return {"account": account, "as_of": iso(as_of) if as_of else None, "invoices": out}


def explain(engine: Reader, account: str, line: str, period: str | None = None,
            as_of: datetime | None = None) -> list[dict[str, Any]]:
    """For invoice lines — `N` (the N-th line of the period's invoice; default period: the
    latest) or `INSTANCE[@VERSION]` — the events that opened and closed each billed interval
    holding its seconds, and the adjustments naming the instance."""
    as_of = as_of or newest_event_time(engine)
    report = invoices(engine, account, None, as_of)
    found = [i for i in report["invoices"] if period is None or i["period"] == period]
    if not LINE_REF.fullmatch(line):
        raise QueryError([("line", "a line number N, or INSTANCE[@VERSION]")])
    if line.isascii() and line.isdigit() and found:
        found = [i for i in found if i["period"] == max(j["period"] for j in found)][:1]
        picked = [(i, x) for i in found for x in i["lines"] if x["line"] == int(line)]
    else:
        name, _, version = line.partition("@")
        picked = [(i, x) for i in found for x in i["lines"] if x["instance_id"] == name
                  and (not version or str(x["price_version"]) == version)]
    books = {row["cell"]: price_book(row) for row in engine.view.select(PRICE_BOOKS)}
    out = []
    for invoice, x in picked:
        book = books[invoice["cell"]]
        assert book is not None
        lo, hi = rating.period_bounds(invoice["period"])
        (v,) = [i for i, pv in enumerate(book.versions) if pv.version == x["price_version"]]
        lo = max(lo, book.starts[v])
        hi = min(hi, book.starts[v + 1]) if v + 1 < len(book.starts) else hi
        # Instance ids are per account: another account may use the same name in the cell.
        (row,) = engine.view.select(USAGE, {"cell": invoice["cell"], "account": account,
                                            "instance_id": x["instance_id"]})
        intervals = []
        for t0, t1, *ids in json.loads(row["intervals"]):
            opened_by, closed_by = [*ids, None, None][:2]  # rows metered before ids: none
            s0 = t0 // rating.US_PER_S
            end = t1
            if end is None and invoice["status"] == "open" and as_of is not None:
                end = max(t0, micros(as_of))  # accrued up to as_of
            # Still open on a finalised line: billed to the line's end.
            s1 = -(-end // rating.US_PER_S) if end is not None else hi
            if end != t0 and max(s0, lo) < min(s1, hi):
                intervals.append({
                    "opened_by": opened_by, "opened_at": _at(t0), "closed_by": closed_by,
                    "closed_at": _at(t1) if t1 is not None else None,
                    "seconds_in_line": min(s1, hi) - max(s0, lo)})
        out.append({"cell": invoice["cell"], "period": invoice["period"],
                    "status": invoice["status"], "line": x, "intervals": intervals,
                    "adjustments": [a for i in report["invoices"] for a in i["adjustments"]
                                    if a["instance_id"] == x["instance_id"]]})
    return out


def _at(t_us: int) -> str:
    return iso(EPOCH + timedelta(microseconds=t_us))
