"""The `usage` read model: billed intervals and billed seconds per instance, and price books.

The meter keeps what the billing rule needs (DESIGN §3): each instance's billed intervals in
exact microseconds and its billed spec; amounts are rated from them by the pure rating policy,
so a query for "now" never needs the wall clock: it names its `as_of`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.domain.instance import BILLED, Instance
from engine.domain.price_book import PriceBook
from engine.policies import rating
from engine.policies.spec_catalogue import Spec
from projections.projection import RowProjection
from projections.tables import Key, Row, Rows, Table

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

USAGE = Table("usage", ("id",), {
    "id": "text", "cell": "text", "instance_id": "text", "account": "text",
    "runtime": "text", "requested_vcpu": "numeric", "requested_memory_gib": "numeric",
    "billed_vcpu": "numeric", "billed_memory_gib": "numeric", "state": "text",
    "intervals": "text", "billed_seconds": "int", "last_event_at": "text",
})
PRICE_BOOKS = Table("price_books", ("id",), {"id": "text", "cell": "text", "versions": "text"})


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


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
            rows.put(USAGE, meter(row, event.new_state(), event.timestamp))


def meter(row: Row, state: str, at: datetime) -> Row:
    """Open a billed interval on entering a billed state, close it on leaving one."""
    intervals: list[list[int | None]] = json.loads(row["intervals"])
    is_open = bool(intervals) and intervals[-1][1] is None
    if state in BILLED and not is_open:
        intervals.append([micros(at), None])
    elif state not in BILLED and is_open:
        intervals[-1][1] = micros(at)
    closed = [(a, b) for a, b in intervals if b is not None]
    seconds = sum(s1 - s0 for s0, s1 in rating.billed_seconds(closed))  # type: ignore[arg-type]
    return {**row, "state": state, "intervals": json.dumps(intervals),
            "billed_seconds": seconds, "last_event_at": at.isoformat()}


def price_versions(book_row: Row) -> list[rating.PriceVersion]:
    return [
        rating.PriceVersion(
            version=v["number"], effective_from=v["effective_from"],
            rate_vcpu_s=Decimal(v["rate_per_vcpu_second"]),
            rate_gib_s=Decimal(v["rate_per_gib_second"]), currency=v["currency"],
            minor_unit=v["minor_unit"], min_seconds=v["min_seconds"],
            grace_seconds=v["grace_seconds"])
        for v in json.loads(book_row["versions"])
    ]


def rate_usage(row: Row, versions: list[rating.PriceVersion], as_of: datetime
               ) -> list[rating.InvoiceLine]:
    """Invoice lines of one instance, its open interval accrued up to `as_of`."""
    end = micros(as_of)
    intervals = [(a, b if b is not None else max(a, end)) for a, b in json.loads(row["intervals"])]
    return rating.rate_instance(
        row["instance_id"], row["account"],
        Spec(Decimal(row["billed_vcpu"]), Decimal(row["billed_memory_gib"])), row["runtime"],
        intervals, versions,
        requested=Spec(Decimal(row["requested_vcpu"]), Decimal(row["requested_memory_gib"])))
