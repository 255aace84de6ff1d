"""The meter read model (`usage`): each instance's billed intervals, kept by the billing
fold (engine/billing/meter.py, the same `step` the writer's meter calls), laid out by period
so that a query reads only the periods it asks for (docs/design.md §3.5).

- `usage_instances` (by instance id): the fold's state, where each event finds its instance.
- `usage_by_period` (account, period, cell, instance): a copy of the instance in the period
  it was requested in and in every period its ended intervals bill a second in, with those
  seconds. An instance is rewritten in all of its periods whenever it changes.
- `usage_open` (account, cell, instance): the instances billing right now; an open
  interval reaches every period up to `as_of`, so open periods read these as well.
- `usage_late` (account, closed, cell, instance): instances a late report changed after
  their cell closed `closed` (the writer's rule, meter.is_late): the only ones whose closed
  periods can differ from what was billed, so the only ones pending adjustments re-rate.
- `usage_calendar`: each cell's latest closed period, one row (events name no cell).

Intervals are [t0_us, t1_us | null, opened_by, closed_by | null] with the ids of the events
that opened and closed them (for `cis invoices --explain`). Amounts are not stored: queries
rate the intervals up to a named `as_of`, so "now" never needs the wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from engine.billing import meter
from engine.billing.periods import micros, period_at, period_bounds
from engine.billing.price_book import PriceBook as RatingBook
from engine.billing.price_book import price_version
from engine.domain.instance import Instance
from engine.domain.invoice import BillingCalendar
from engine.domain.price_book import PriceBook
from projections.projection import RowProjection, kind_among
from projections.tables import Key, Row, Rows, Table
from projections.texts import hex_id, iso_offset

_WHAT = ("account", "cell", "instance_id", "id")
_INSTANCE = {
    "account": "text", "cell": "text", "instance_id": "text", "id": "text", "runtime": "text",
    "requested_vcpu": "numeric", "requested_memory_gib": "numeric", "billed_vcpu": "numeric",
    "billed_memory_gib": "numeric", "state": "text", "intervals": "text",
}
USAGE_INSTANCES = Table("usage_instances", ("id",), {
    **_INSTANCE, "requested_period": "text", "late_since": "text", "last_event_at": "text"})
USAGE = Table("usage_by_period", ("account", "period", "cell", "instance_id"), {
    "period": "text", **_INSTANCE, "billed_seconds": "int"})
USAGE_OPEN = Table("usage_open", ("account", "cell", "instance_id"), dict(_INSTANCE))
USAGE_LATE = Table("usage_late", ("account", "closed", "cell", "instance_id"), {
    "closed": "text", **_INSTANCE})
USAGE_CALENDAR = Table("usage_calendar", ("name",), {"name": "text", "closed": "text"})
PRICE_BOOKS = Table("price_books", ("id",), {"id": "text", "cell": "text", "versions": "text"})
CALENDAR = ("closed",)  # the calendar's one row


# What an event is to this projection, by class (projection.kind_among).
_KIND = kind_among(Instance.Transitioned, Instance.Requested, PriceBook.Opened,
                   PriceBook.VersionPublished, PriceBook.Event, BillingCalendar.PeriodClosed)


class UsageProjection(RowProjection):
    # Versioned with its tables' shape: a new name starts from position 0, so an upgraded
    # reader fills the new tables from the log by itself (the old ones can be dropped).
    name = "usage_v2"
    tables = (USAGE_INSTANCES, USAGE, USAGE_OPEN, USAGE_LATE, USAGE_CALENDAR, PRICE_BOOKS)
    events = (Instance.Requested, Instance.Transitioned, PriceBook.Event,
              BillingCalendar.PeriodClosed)

    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        kind = _KIND(event)
        if kind is Instance.Transitioned:
            return [(USAGE_INSTANCES, (hex_id(event),)), (USAGE_CALENDAR, CALENDAR)]
        if kind in (PriceBook.Opened, PriceBook.VersionPublished, PriceBook.Event):
            return [(PRICE_BOOKS, (hex_id(event),))]
        if kind is BillingCalendar.PeriodClosed:
            return [(USAGE_CALENDAR, CALENDAR)]
        return []

    def creates(self, event: Any) -> Iterable[tuple[Table, Key]]:
        kind = _KIND(event)
        if kind is Instance.Requested:
            return [(USAGE_INSTANCES, (hex_id(event),))]
        if kind is PriceBook.Opened:
            return [(PRICE_BOOKS, (hex_id(event),))]
        return ()

    def apply(self, event: Any, rows: Rows) -> None:
        kind = _KIND(event)
        if kind is Instance.Transitioned:  # most events: first
            instance = rows.get(USAGE_INSTANCES, (hex_id(event),))
            assert instance is not None
            was_late = instance["late_since"]
            intervals, change = follow(instance, event, rows)
            rows.put(USAGE_INSTANCES, instance)
            _spread(rows, instance, intervals, change, was_late)
        elif kind is Instance.Requested:
            instance = {
                "id": hex_id(event), "cell": event.cell, "instance_id": event.name,
                "account": event.account, "runtime": event.runtime,
                "requested_vcpu": str(event.requested_vcpu),
                "requested_memory_gib": str(event.requested_memory_gib),
                "billed_vcpu": str(event.billed_vcpu),
                "billed_memory_gib": str(event.billed_memory_gib), "state": "requested",
                "intervals": "[]", "last_event_at": iso_offset(event.timestamp),
                "requested_period": period_at(micros(event.timestamp)),
                "late_since": None,
            }
            rows.put(USAGE_INSTANCES, instance)
            _spread(rows, instance, [], None, None)
        elif kind is PriceBook.Opened:
            rows.put(PRICE_BOOKS, {"id": hex_id(event), "cell": event.cell,
                                   "versions": "[]"})
        elif kind is PriceBook.VersionPublished:
            book = rows.get(PRICE_BOOKS, (hex_id(event),))
            assert book is not None
            versions = [*json.loads(book["versions"]), {"number": event.number, **event.terms}]
            rows.put(PRICE_BOOKS, {**book, "versions": json.dumps(versions, sort_keys=True)})
        elif kind is BillingCalendar.PeriodClosed:
            closed = _calendar(rows)
            closed[event.cell] = event.period
            rows.put(USAGE_CALENDAR, {"name": CALENDAR[0], "closed": json.dumps(closed)})


def follow(instance: Row, event: Any, rows: Rows) -> tuple[list[meter.Interval], str | None]:
    """One transition through the billing fold, recording the ids of the events that open
    and close intervals and, as the writer does, whether it was late (against the cell's
    closed periods). Updates `instance`; returns its intervals and what the transition did
    to them (meter.step)."""
    intervals: list[meter.Interval] = orjson.loads(instance["intervals"])
    state, at_us = event.new_state(), micros(event.timestamp)
    change = None
    if meter.changes(intervals, state):
        closed = _calendar(rows).get(instance["cell"])
        if closed is not None and meter.is_late(at_us, period_bounds(closed)[1]):
            instance["late_since"] = closed
        change = meter.step(intervals, state, at_us)
        event_id = f"instance/{instance['instance_id']}#{event.originator_version}"
        if change == meter.OPENED:
            intervals[-1] += [event_id, None]
        else:
            intervals[-1][3] = event_id
        instance["intervals"] = orjson.dumps(intervals).decode()
    instance["state"] = state
    instance["last_event_at"] = iso_offset(event.timestamp)
    return intervals, change


def _spread(rows: Rows, instance: Row, intervals: list[meter.Interval], change: str | None,
            was_late: str | None) -> None:
    """Copy the instance into each period it is in, and into the open and late sets."""
    copy = {c: instance[c] for c in _INSTANCE}
    where = (instance["account"], instance["cell"], instance["instance_id"])
    closed = meter.closed_part(intervals)
    # (Most transitions come before any interval has ended: nothing to count.)
    seconds = meter.seconds_per_period(closed) if closed else {}
    for period in {instance["requested_period"], *seconds}:
        rows.put(USAGE, {**copy, "period": period, "billed_seconds": seconds.get(period, 0)})
    if meter.is_open(intervals):
        rows.put(USAGE_OPEN, copy)
    elif change == meter.CLOSED:
        _close(rows, instance["id"], where)
    late = instance["late_since"]
    if late is not None:
        rows.put(USAGE_LATE, {**copy, "closed": late})
    if was_late is not None and was_late != late:
        rows.delete(USAGE_LATE, (where[0], was_late, *where[1:]))


def _close(rows: Rows, instance_id: str, where: Key) -> None:
    """Drop the instance's open row. If it was opened in this batch, the row is not in the
    view yet: forget the pending put instead of sending a delete (a rebuild would otherwise
    send one delete per short-lived instance)."""
    stored = rows.loaded.get(USAGE_INSTANCES.name, {}).get((instance_id,))
    if stored is not None and meter.is_open(orjson.loads(stored["intervals"])):
        rows.delete(USAGE_OPEN, where)
    else:
        rows.changed.get(USAGE_OPEN.name, {}).pop(where, None)


def _calendar(rows: Rows) -> dict[str, str]:
    row = rows.get(USAGE_CALENDAR, CALENDAR)
    return json.loads(row["closed"]) if row is not None else {}


def price_book(book_row: Row) -> RatingBook | None:
    """The cell's book for rating (build one per cell and reuse it: it caches prices)."""
    versions = [price_version(v) for v in json.loads(book_row["versions"])]
    return RatingBook(tuple(versions)) if versions else None
