"""Invariant 6: one writer per cell. A second, stale writer is fenced by the cell log's
version: its batch conflicts, nothing of it is saved, and it is decided again on fresh state."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from adapters.bootstrap import Engine, connect
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, domain_snapshot, event_count, one


def _stored(engine: Engine) -> int:
    # Not the highest notification id: a refused PostgreSQL transaction still uses up ids.
    return len(engine.app.recorder.select_notifications(start=1, limit=1_000_000))


def _shared(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store is private to its process: there is no second writer")


def test_stale_writer_conflicts_and_decides_again(store_url: str) -> None:
    _shared(store_url)
    create_x, create_y = b.create("x", 2), b.create("y", 3)
    with connect(store_url) as first, connect(store_url) as second:
        cell_with_ready_node(first)
        assert second.processor.world.pool(b.CELL, "general") is not None  # loaded now
        accepted(first, create_x)
        # `second` still believes the node is empty and the cell log is older.
        outcome = one(second, create_y)
        assert outcome.status == "accepted"
        assert second.processor.world.instance(b.CELL, b.ACCOUNT, "x") is not None  # it reloaded
        shared = domain_snapshot(second), _stored(second)
    with connect("memory://") as alone:  # the same commands, one writer
        cell_with_ready_node(alone)
        accepted(alone, create_x)
        accepted(alone, create_y)
        assert (domain_snapshot(alone), _stored(alone)) == shared


def test_stale_writer_repeating_a_command_gets_the_recorded_outcome(store_url: str) -> None:
    _shared(store_url)
    with connect(store_url) as first, connect(store_url) as second:
        cell_with_ready_node(first)
        second.processor.world  # noqa: B018 - load the state before the first writer moves on
        create = b.create("x", 2)
        recorded = one(first, create)
        before = event_count(first)
        assert one(second, create) == recorded
        assert event_count(second) == before


def test_conflicting_batch_leaves_no_trace(store_url: str) -> None:
    """Events and the tracking row of a refused write are not saved, not even in part."""
    _shared(store_url)
    with connect(store_url) as engine:
        recorder = engine.app.process_recorder
        originator = uuid.uuid4()

        def event(version: int) -> StoredEvent:
            return StoredEvent(originator_id=originator, originator_version=version,
                               topic="tests:Event", state=b'{"n":%d}' % version)

        ids = recorder.insert_events([event(1), event(2)], tracking=Tracking("src", 1))
        assert ids is not None and list(ids) == sorted(ids) and len(set(ids)) == 2
        with pytest.raises(IntegrityError):
            recorder.insert_events([event(3), event(2)], tracking=Tracking("src", 2))
        assert [e.originator_version for e in recorder.select_events(originator)] == [1, 2]
        assert recorder.max_tracking_id("src") == 1


@pytest.mark.parametrize("events", [1, 40])  # PostgreSQL: one multi-row INSERT, or pipelined
def test_notification_ids_returned_are_the_stored_ones(store_url: str, events: int) -> None:
    with connect(store_url) as engine:
        recorder = engine.app.process_recorder
        originator = uuid.uuid4()
        first = recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "tests:Other", b"{}")])
        batch = [StoredEvent(originator_id=originator, originator_version=v, topic="tests:E",
                             state=b"{}") for v in range(1, events + 1)]
        ids = recorder.insert_events(batch, tracking=Tracking("src", 1))
        stored = recorder.select_notifications(start=1, limit=1000)
        assert first is not None and ids is not None
        assert list(ids) == [n.id for n in stored if n.originator_id == originator]
        assert min(ids) > max(first)
