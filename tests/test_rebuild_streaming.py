"""Issue 12 item 7: a rebuild streams the log and compares tables a page at a time."""

from __future__ import annotations

import json

import pytest

from adapters.bootstrap import Engine, connect
from adapters.cli import main
from projections import runner
from projections.instances import INSTANCES
from projections.tables import digest, scan
from projections.views import sql
from tests.helpers import simulate


def _rows(engine: Engine) -> dict[str, list[dict]]:
    return {t.name: engine.view.select(t) for p in engine.projections for t in p.tables}


def test_rebuild_in_small_pages_gives_the_rows_of_one_pass(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    simulate(engine, 20, seed=4, hours=10)
    engine.update_projections()
    whole = _rows(engine)
    events = engine.app.recorder.max_notification_id()
    assert whole["instances"] and events
    monkeypatch.setattr(runner, "PAGE", 7)  # a page ends inside batches and lifecycles
    done: list[int] = []
    engine.rebuild_projections(done.append)
    assert _rows(engine) == whole
    assert sum(done) == events and max(done) <= 7  # the progress bar's count: every event


def test_tables_are_scanned_and_digested_a_page_at_a_time(engine: Engine) -> None:
    simulate(engine, 12, seed=6, hours=8)
    engine.update_projections()
    for table in (t for p in engine.projections for t in p.tables):
        rows = engine.view.select(table)  # in key order
        assert list(scan(engine.view, table, page=3)) == rows
        count, whole = digest(engine.view, table, page=len(rows) + 1)
        assert (count, whole) == digest(engine.view, table, page=2) and count == len(rows)
    before = digest(engine.view, INSTANCES)
    row = engine.view.select(INSTANCES)[0]
    engine.view.put(INSTANCES, [{**row, "state": "tampered"}])
    assert digest(engine.view, INSTANCES) != before


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_cis_rebuild_compares_by_digest(store_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with connect(store_url) as engine:
        simulate(engine, 10, seed=2, hours=6)
        engine.update_projections()
        counts = {t: len(rows) for t, rows in _rows(engine).items()}
    with pytest.raises(SystemExit) as exit_:
        main(["rebuild", "--store", store_url])
    assert exit_.value.code == 0
    assert json.loads(capsys.readouterr().out) == {"tables": counts, "identical": True}
    with connect(store_url) as engine:  # a row the log does not say: the rebuild differs
        row = engine.view.select(INSTANCES)[0]
        engine.view.put(INSTANCES, [{**row, "state": "tampered"}])
    with pytest.raises(SystemExit) as exit_:
        main(["rebuild", "--store", store_url])
    assert exit_.value.code == 1
    assert json.loads(capsys.readouterr().out)["identical"] is False


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_upserts_through_copy_give_the_rows_of_array_upserts(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "COPY_AT_LEAST", 10**9)  # every upsert as one array statement
    simulate(engine, 20, seed=8, hours=10)
    engine.update_projections()
    by_arrays = _rows(engine)
    monkeypatch.setattr(sql, "COPY_AT_LEAST", 1)  # every upsert through COPY
    engine.rebuild_projections()
    assert _rows(engine) == by_arrays
    engine.rebuild_projections()  # again on the same connections: their staging tables
    assert _rows(engine) == by_arrays


def test_rows_forgotten_between_windows_are_read_back_alike(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner keeps rows between windows in a bounded cache; rows it has dropped, and
    rows a cold cache never saw (a catch-up resumed mid-log), are read from the view."""
    simulate(engine, 20, seed=9, hours=10)
    engine.update_projections()
    whole = _rows(engine)
    monkeypatch.setattr(runner, "PAGE", 11)
    monkeypatch.setattr(runner, "CACHED_ROWS", 2)  # almost every row is forgotten
    engine.rebuild_projections()
    assert _rows(engine) == whole
    for projection in engine.projections:  # resumed half-way, by a pass with a cold cache
        engine.view.drop(projection.tables, projection.name)
        engine.view.create(projection.tables)
    end = engine.app.recorder.max_notification_id()
    monkeypatch.setattr(runner, "PAGE", end // 2)
    monkeypatch.setattr(engine.app.recorder, "max_notification_id", lambda: end // 2)
    engine.update_projections()
    monkeypatch.undo()
    engine.update_projections()
    assert _rows(engine) == whole
