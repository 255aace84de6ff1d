"""Batches of events are written whole or not at all, whichever way the store writes them
(on PostgreSQL a few events go as one INSERT, more as one binary COPY: adapters/pg_recorder.py)."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from adapters.bootstrap import connect
from adapters.pg_recorder import SMALL_BATCH

MANY = SMALL_BATCH * 3


def _events(originator: uuid.UUID, versions: range, state: bytes = b"{}") -> list[StoredEvent]:
    return [StoredEvent(originator_id=originator, originator_version=v, topic="tests:E",
                        state=state) for v in versions]


@pytest.mark.parametrize("events", [2, MANY])
def test_a_batch_that_conflicts_leaves_no_trace(store_url: str, events: int) -> None:
    with connect(store_url) as engine:
        recorder = engine.app.process_recorder
        originator = uuid.uuid4()
        recorder.insert_events(_events(originator, range(1, events + 1)),
                               tracking=Tracking("src", 1))
        # The second batch repeats the first one's last version halfway through.
        again = _events(originator, range(events + 1, events + events // 2 + 1)) \
            + _events(originator, range(events, events + 1)) \
            + _events(uuid.uuid4(), range(1, events // 2 + 1))
        with pytest.raises(IntegrityError):
            recorder.insert_events(again, tracking=Tracking("src", 2))
        stored = recorder.select_notifications(start=1, limit=10 * MANY)
        assert [n.originator_version for n in stored] == list(range(1, events + 1))
        assert recorder.max_tracking_id("src") == 1


def test_a_batch_is_stored_byte_for_byte_with_its_position(store_url: str) -> None:
    with connect(store_url) as engine:
        recorder = engine.app.process_recorder
        originator = uuid.uuid4()
        # Every byte value, NUL and backslash included, in the bytea column.
        batch = _events(originator, range(1, MANY + 1), state=bytes(range(256)) * 3)
        ids = recorder.insert_events(batch, tracking=Tracking("src", 7))
        stored = recorder.select_notifications(start=1, limit=10 * MANY)
        assert ids is not None and list(ids) == [n.id for n in stored]
        assert [(n.originator_id, n.originator_version, n.topic, n.state) for n in stored] \
            == [(e.originator_id, e.originator_version, e.topic, e.state) for e in batch]
        assert recorder.max_tracking_id("src") == 7
