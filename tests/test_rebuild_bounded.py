"""Issue 12 item 7: a rebuild holds what it needs in bounded structures, whatever the length
of the history (counted in entries, never timed), and the views delete many rows at once."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from adapters.bootstrap import Engine, connect
from projections import runner
from projections.instances import INSTANCES
from projections.tables import Table
from projections.usage import USAGE_LATE
from tests.helpers import simulate


def _largest_held(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> int:
    """The most rows any projection's cache kept for a table between windows."""
    largest = 0
    committed = runner._Cache.committed

    def counting(cache: Any, changed: Any) -> None:
        nonlocal largest
        committed(cache, changed)
        largest = max([largest, *(len(rows) for rows in cache.tables.values())])

    monkeypatch.setattr(runner._Cache, "committed", counting)
    engine.rebuild_projections()
    monkeypatch.undo()
    return largest


def test_the_row_cache_holds_at_most_its_bound_however_long_the_history(
        monkeypatch: pytest.MonkeyPatch) -> None:
    held = {}
    for hours in (2, 10):
        with connect("memory://") as engine:
            simulate(engine, 20, seed=4, hours=hours)
            monkeypatch.setattr(runner, "PAGE", 40)
            monkeypatch.setattr(runner, "CACHED_ROWS", 8)
            held[hours] = (_largest_held(engine, monkeypatch),
                           len(engine.view.select(INSTANCES)))
    (short, short_rows), (long, long_rows) = held[2], held[10]
    assert long_rows > 8 and long_rows > 2 * short_rows  # a longer history, more rows ...
    assert short <= 8 and long == 8  # ... held in no more


def test_the_cache_forgets_its_oldest_rows_first() -> None:
    table = Table("t", ("id",), {"id": "text"})
    cache = runner._Cache(2)
    cache.tables[table.name] = {}
    cache.committed({table.name: {("a",): {"id": "a"}, ("b",): {"id": "b"}}})
    cache.committed({table.name: {("c",): {"id": "c"}, ("a",): {"id": "a"}}})
    assert list(cache.tables[table.name]) == [("c",), ("a",)]  # b, the oldest, forgotten


def test_many_rows_deleted_at_once(engine: Engine) -> None:
    """PostgreSQL deletes a commit's rows in one statement by key arrays (a key of several
    columns here); every store ends with the same rows."""
    engine.view.create([USAGE_LATE])

    def row(n: int) -> dict[str, Any]:
        return {"account": "a", "closed": f"2026-0{n % 3 + 1}", "cell": "c",
                "instance_id": f"i{n}", "id": f"x{n}", "runtime": "runc",
                "requested_vcpu": "1", "requested_memory_gib": "1", "billed_vcpu": "1",
                "billed_memory_gib": "1", "state": "running", "intervals": "[]"}

    rows = [row(n) for n in range(150)]
    engine.view.commit([USAGE_LATE], {USAGE_LATE.name: {USAGE_LATE.key_of(r): r for r in rows}},
                       Tracking("bounded", 1))
    gone = {USAGE_LATE.key_of(r): None for r in rows[::2]}
    engine.view.commit([USAGE_LATE], {USAGE_LATE.name: gone}, Tracking("bounded", 2))
    left = engine.view.select(USAGE_LATE)
    assert sorted(r["instance_id"] for r in left) == sorted(r["instance_id"] for r in rows[1::2])
