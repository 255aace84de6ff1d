"""Read-side queries over the projections: what `cis instances`, `cis usage` and
`cis invoices` show."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.bootstrap import Engine
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
from projections.usage import PRICE_BOOKS, USAGE, price_book, rate_usage


def event_time(engine: Engine, notification_id: int | None) -> datetime | None:
    """The time of the event stored under `notification_id` (None for none)."""
    if not notification_id:
        return None
    (_, event), = engine.app.page(notification_id - 1, 1)
    return event.timestamp


def newest_event_time(engine: Engine) -> datetime | None:
    """The time the log has reached: the default `as_of` (never the wall clock)."""
    return event_time(engine, engine.app.recorder.max_notification_id())


def instances(engine: Engine, account: str | None = None) -> list[dict[str, Any]]:
    return engine.view.select(INSTANCES, {"account": account} if account else None)


def states(engine: Engine) -> Counter[str]:
    return Counter(row["state"] for row in engine.view.select(INSTANCES))


def usage(engine: Engine, account: str, as_of: datetime | None = None) -> dict[str, Any]:
    """Billed seconds and amounts per instance of one account, accrued up to `as_of`."""
    as_of = as_of or newest_event_time(engine)
    books = {row["cell"]: price_book(row) for row in engine.view.select(PRICE_BOOKS)}
    lines = []
    totals: dict[str, Decimal] = {}
    for row in engine.view.select(USAGE, {"account": account}):
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


def invoices(engine: Engine, account: str, period: str | None = None,
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
    closed: dict[str, str] = {}
    for row in view.select(BILLING_PERIODS):
        closed[row["cell"]] = max(closed.get(row["cell"], row["period"]), row["period"])
    usage_rows: dict[str, list[dict[str, Any]]] = {}
    for row in view.select(USAGE, mine):
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


def explain(engine: Engine, account: str, line: str, period: str | None = None,
            as_of: datetime | None = None) -> list[dict[str, Any]]:
    """For invoice lines — `N` (the N-th line of the period's invoice; default period: the
    latest) or `INSTANCE[@VERSION]` — the events that opened and closed each billed interval
    holding its seconds, and the adjustments naming the instance."""
    as_of = as_of or newest_event_time(engine)
    report = invoices(engine, account, None, as_of)
    found = [i for i in report["invoices"] if period is None or i["period"] == period]
    if line.isdigit() and found:
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
        (row,) = engine.view.select(USAGE, {"cell": invoice["cell"],
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
