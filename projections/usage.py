"""The meter read model (`usage`): billed intervals per instance, and the price books.

Each instance's billed intervals follow the truth table of docs/design.md §3.2: an interval
opens when the instance enters a billed state (starting, running, restarting) and closes when
it leaves them, so restarts inside a running instance never open a second interval. Intervals are
exact epoch microseconds with the ids of the events that opened and closed them (for
`cis invoices --explain`). Amounts are rated from them by the pure rating policy, so a query
for "now" never needs the wall clock: it names its `as_of`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.billing import micros, price_version
from engine.domain.instance import BILLED, Instance
from engine.domain.price_book import PriceBook
from engine.policies import rating
from engine.policies.spec_catalogue import Spec
from projections.projection import RowProjection
from projections.tables import Key, Row, Rows, Table

USAGE = Table("usage", ("id",), {
    "id": "text", "cell": "text", "instance_id": "text", "account": "text",
    "runtime": "text", "requested_vcpu": "numeric", "requested_memory_gib": "numeric",
    "billed_vcpu": "numeric", "billed_memory_gib": "numeric", "state": "text",
    "intervals": "text", "billed_seconds": "int", "last_event_at": "text",
})
PRICE_BOOKS = Table("price_books", ("id",), {"id": "text", "cell": "text", "versions": "text"})


class UsageProjection(RowProjection):
    name = "usage"
    tables = (USAGE, PRICE_BOOKS)

    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, Instance.Event):
            return [(USAGE, (event.originator_id.hex,))]
        if isinstance(event, PriceBook.Event):
            return [(PRICE_BOOKS, (event.originator_id.hex,))]
        return []

    def apply(self, event: Any, rows: Rows) -> None:
        if isinstance(event, PriceBook.Opened):
            rows.put(PRICE_BOOKS, {"id": event.originator_id.hex, "cell": event.cell,
                                   "versions": "[]"})
        elif isinstance(event, PriceBook.VersionPublished):
            book = rows.get(PRICE_BOOKS, (event.originator_id.hex,))
            assert book is not None
            versions = [*json.loads(book["versions"]), {"number": event.number, **event.terms}]
            rows.put(PRICE_BOOKS, {**book, "versions": json.dumps(versions, sort_keys=True)})
        elif isinstance(event, Instance.Requested):
            rows.put(USAGE, {
                "id": event.originator_id.hex, "cell": event.cell, "instance_id": event.name,
                "account": event.account, "runtime": event.runtime,
                "requested_vcpu": str(event.requested_vcpu),
                "requested_memory_gib": str(event.requested_memory_gib),
                "billed_vcpu": str(event.billed_vcpu),
                "billed_memory_gib": str(event.billed_memory_gib), "state": "requested",
                "intervals": "[]", "billed_seconds": 0,
                "last_event_at": event.timestamp.isoformat(),
            })
        elif isinstance(event, Instance.Transitioned):
            row = rows.get(USAGE, (event.originator_id.hex,))
            assert row is not None
            event_id = f"instance/{row['instance_id']}#{event.originator_version}"
            rows.put(USAGE, meter(row, event.new_state(), event.timestamp, event_id))


def meter(row: Row, state: str, at: datetime, event_id: str) -> Row:
    """Open a billed interval on entering a billed state, close it on leaving one.

    An interval is [t0_us, t1_us | null, opened_by, closed_by | null].
    """
    intervals: list[list[Any]] = json.loads(row["intervals"])
    is_open = bool(intervals) and intervals[-1][1] is None
    if state in BILLED and not is_open:
        intervals.append([micros(at), None, event_id, None])
    elif state not in BILLED and is_open:
        intervals[-1][1] = micros(at)
        intervals[-1][3] = event_id
    closed = [(iv[0], iv[1]) for iv in intervals if iv[1] is not None]
    seconds = sum(s1 - s0 for s0, s1 in rating.billed_seconds(closed))
    return {**row, "state": state, "intervals": json.dumps(intervals),
            "billed_seconds": seconds, "last_event_at": at.isoformat()}


def price_book(book_row: Row) -> rating.PriceBook | None:
    """The cell's book for rating (build one per cell and reuse it: it caches prices)."""
    versions = [price_version(v) for v in json.loads(book_row["versions"])]
    return rating.PriceBook(tuple(versions)) if versions else None


def accrued(row: Row, as_of_us: int) -> list[tuple[int, int]]:
    """Billed intervals as known at `as_of`: cut there, later ones dropped."""
    out = []
    for t0, t1, *_ in json.loads(row["intervals"]):
        if t0 < as_of_us:
            out.append((t0, as_of_us if t1 is None else min(t1, as_of_us)))
    return out


def extended(row: Row, horizon_us: int) -> list[tuple[int, int]]:
    """Every billed interval, open ones running on to `horizon_us`."""
    return [(t0, max(t0, horizon_us) if t1 is None else t1)
            for t0, t1, *_ in json.loads(row["intervals"])]


def rate_intervals(row: Row, intervals: list[tuple[int, int]],
                   book: rating.PriceBook | list[rating.PriceVersion]
                   ) -> list[rating.InvoiceLine]:
    return rating.rate_instance(
        row["instance_id"], row["account"],
        Spec(Decimal(row["billed_vcpu"]), Decimal(row["billed_memory_gib"])), row["runtime"],
        intervals, book,
        requested=Spec(Decimal(row["requested_vcpu"]), Decimal(row["requested_memory_gib"])))


def rate_usage(row: Row, book: rating.PriceBook | list[rating.PriceVersion], as_of: datetime
               ) -> list[rating.InvoiceLine]:
    """Invoice lines of one instance, accrued up to `as_of`."""
    return rate_intervals(row, accrued(row, micros(as_of)), book)
