"""Remembered command ids are pointers into the cell log, not outcomes (docs/design.md §7.4):
a repeat reads its entry back, a hash collision is never taken for a repeat, and a frozen
segment answers as the entries did before it froze, also from a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.bootstrap import connect
from engine import id_memory
from tests import builders as b
from tests.helpers import accepted, one


def _creates(n: int) -> list[dict]:  # type: ignore[type-arg]
    return [b.create(f"web-{i}", t=1 + i) for i in range(n)]


def test_the_state_holds_no_outcome_only_where_it_is_recorded(store_url: str) -> None:
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        creates = _creates(5)
        firsts = [one(engine, c) for c in creates]
        memory = engine.processor.world.parts[b.CELL].ids
        assert not memory.pending  # every entry of a stored batch is a location
        assert all(isinstance(loc, tuple) and len(loc) == 3
                   for locs in memory.recent.values() for loc in locs)
        assert [one(engine, c) for c in creates] == firsts  # read back from the log


def test_a_hash_collision_is_not_a_repeat(store_url: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_memory, "key_hash", lambda principal, command_id: 7)
    monkeypatch.setattr(id_memory, "SEGMENT", 3)  # freeze some into segments too
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        creates = _creates(7)
        firsts = [one(engine, c) for c in creates]
        assert all(o.status == "accepted" for o in firsts)  # none taken for another's repeat
        assert engine.processor.world.parts[b.CELL].ids.segments
        assert [one(engine, c) for c in creates] == firsts


def test_frozen_segments_answer_after_a_restart_from_a_snapshot(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if store_url.startswith("memory"):
        pytest.skip("a memory store ends with its process")
    monkeypatch.setattr(id_memory, "SEGMENT", 2)
    creates = _creates(6)
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        firsts = [one(engine, c) for c in creates]
    with connect(store_url) as engine:  # the clean shutdown above left a snapshot
        engine.processor.warm()
        assert engine.processor.world.parts[b.CELL].ids.segments
        assert [one(engine, c) for c in creates] == firsts


def test_the_meter_holds_each_size_and_account_once_by_spelling(store_url: str) -> None:
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        accepted(engine, *[b.create(f"web-{i}", t=1 + i) for i in range(3)],
                 b.create("odd", t=9, vcpu="0.50"))
        meter = engine.processor.world.billing.cells[b.CELL]
        web = [meter.instances[("acme", f"web-{i}")] for i in range(3)]
        assert all(m.requested is web[0].requested and m.spec is web[0].spec for m in web)
        assert all(m.account is web[0].account for m in web)
        odd = meter.instances[("acme", "odd")]
        assert str(odd.requested.vcpu) == "0.50" and odd.requested is not web[0].requested


def test_segments_merge_so_a_miss_searches_few_and_every_id_still_answers(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A miss (every new command) searches each segment: one per SEGMENT ids made a week of
    # ids cost a hundred binary searches per command. Neighbours merge as sizes double.
    monkeypatch.setattr(id_memory, "SEGMENT", 2)
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        creates = _creates(16)
        firsts = [one(engine, c) for c in creates]
        segments = engine.processor.world.parts[b.CELL].ids.segments
        sizes = [len(s) for s in segments]
        assert len(segments) <= 3 and sizes == sorted(sizes, reverse=True)
        assert sum(sizes) >= 16  # each create's id, and the set-up's
        assert [one(engine, c) for c in creates] == firsts  # found in the merged segments


def test_a_merge_leaves_out_ids_older_than_the_window() -> None:
    memory = id_memory.IdMemory()
    memory.reader = lambda version: [{"principal": "p", "command_id": f"c{version}"}]
    at, step = datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=1)
    for day in range(1, 5):  # a segment a day: 1, then 1+2, then 1+2 | 3, then 2+3+4
        memory.remember([{"principal": "p", "command_id": f"c{day}"}], day, at + day * step)
        memory._freeze()
        if day == 2:
            memory.forget_before(at + 2 * step)  # day 1 is outside the window now
    assert [len(s) for s in memory.segments] == [3]  # the last merge left day 1 out
    assert memory.entry(("p", "c1")) is None
    for day in (2, 3, 4):
        assert memory.entry(("p", f"c{day}")) == {"principal": "p", "command_id": f"c{day}"}
