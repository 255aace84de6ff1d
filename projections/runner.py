"""Keeps a projection's view current with the event log, one transaction per page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Tracking

from engine.application import CisApplication
from projections.projection import RowProjection
from projections.tables import Rows, group_keys

PAGE = 2000


def position(view: Any, projection: RowProjection) -> int:
    return view.max_tracking_id(projection.name) or 0


def catch_up(app: CisApplication, projection: RowProjection, view: Any,
             progress: Callable[[int], None] | None = None) -> int:
    """Apply every event after the view's position; return how many were applied."""
    applied = 0
    after = position(view, projection)
    while True:
        page = app.page(after, PAGE)
        if not page:
            return applied
        events = [event for _, event in page]
        wanted = group_keys(pair for e in events for pair in projection.keys(e))
        rows = Rows({t.name: view.load(t, keys) for t, keys in wanted.items()})
        for event in events:
            projection.apply(event, rows)
        after = page[-1][0]
        view.commit(projection.tables, rows.changed, Tracking(projection.name, after))
        applied += len(page)
        if progress:
            progress(len(page))


def rebuild(app: CisApplication, projection: RowProjection, view: Any,
            progress: Callable[[int], None] | None = None) -> int:
    """Drop the projection's tables and position, then replay the whole log into them."""
    view.drop(projection.tables, projection.name)
    view.create(projection.tables)
    return catch_up(app, projection, view, progress)
