"""`cis bench history`: its synthetic history is the engine's own, and the bench runs."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from adapters.audit_chain import verify_store
from adapters.bootstrap import connect
from adapters.cli import main
from simulations import history
from simulations.bench_history import write_history

LAUNCHES, LIVE, SEED = 120, 12, 5
# The one text in the log that copies cannot reproduce: the engine counts every node its pool
# ever had, terminated ones included, in this reason (engine/policies/node_index.py), so it
# grows with the history; a copied day carries the template day's count.
NODES_AMONG = re.compile(rb"no eligible node among \d+")


def _engine_history(days: int) -> list[tuple[object, ...]]:
    """The history as the engine writes it when given every day's commands."""
    with connect("memory://") as engine:
        harness = history.RecordingHarness(engine)
        for command in history.setup():
            harness.submit(history.START, command)
        harness.run(until=history.day_start(0))
        for day in range(days):
            last = day == days - 1
            harness._ids = itertools.count(day * history.ID_STRIDE)
            history.run_day(harness, day, LAUNCHES, LIVE if last else 0,
                            SEED + 1 if last else SEED)
        stored = engine.app.recorder.select_notifications(start=1, limit=10**9)
    return [_comparable(e) for e in stored]


def _comparable(e: object) -> tuple[object, ...]:
    state = NODES_AMONG.sub(b"no eligible node among N", e.state)  # type: ignore[attr-defined]
    return e.originator_id, e.originator_version, e.topic, state  # type: ignore[attr-defined]


@pytest.mark.parametrize("days", [1, 3])
def test_copied_days_are_the_events_the_engine_writes(days: int) -> None:
    template = history.make_template(LAUNCHES, LIVE, days, SEED)
    copied = [_comparable(e) for _, events in history.history(template, days)
              for e in events]
    assert len(copied) == template.events_in(days)
    assert copied == _engine_history(days)


def test_a_day_that_does_not_end_as_it_began_is_refused() -> None:
    with pytest.raises(history.HistoryError, match="between 0 and"):
        history.make_template(10, 11, 2)
    with pytest.raises(history.HistoryError, match="1 to 30"):
        history.make_template(10, 1, history.MAX_DAYS + 1)
    template = history.make_template(LAUNCHES, LIVE, 2, SEED)
    # A day that leaves its instances undeleted cannot be copied onto the next.
    mover = history.DayMover(template, 0, template.day_sent)  # (0: the events as recorded)
    kept = [mover.event(c) for c in template.day if not c.topic.endswith("Instance.Deleted")]
    with pytest.raises(history.HistoryError, match="does not end as it began"):
        history._describe(template.setup, kept, [])


def test_the_store_must_be_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    template = history.make_template(20, 2, 2, SEED)
    assert write_history(url, template, 2) == template.events_in(2)
    with pytest.raises(history.HistoryError, match="already holds events"):
        write_history(url, template, 2)


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_written_history_chains_and_the_writer_chains_on(store_url: str) -> None:
    """The history is written with its hash-chain links (PostgreSQL: by COPY, the ids read
    back from the sequence), so the audit finds it intact, and so does it after the writer
    has started on it and decided."""
    template = history.make_template(20, 2, 3, SEED)
    written = write_history(store_url, template, 3)
    with connect(store_url) as engine:
        result = verify_store(engine.app)
        assert result.intact and result.events == written
        outcome = engine.apply([json.dumps(history.first_decision(3, "after"))])[0]
        assert outcome.status == "accepted"
        after = verify_store(engine.app)
    assert after.intact and after.events > written


def test_recorded_days_are_kept_and_reused(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = history.make_template(20, 2, 2, SEED, recordings=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        history.recording_names(20, 2, SEED))

    def record_day(*args: object, **kwargs: object) -> None:
        raise AssertionError("recorded again")

    monkeypatch.setattr(history, "record_day", record_day)
    again = history.make_template(20, 2, 2, SEED, recordings=str(tmp_path))
    assert [e for _, d in history.history(again, 2) for e in d] == \
        [e for _, d in history.history(first, 2) for e in d]


def test_bench_history_on_sqlite_prints_its_figures(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "history", "--store", f"sqlite:///{tmp_path / 'h.db'}", "--days", "1",
              "--launches-per-day", "200", "--live", "20", "--json"])
    assert exit_.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert {"events", "generation", "read", "writer_from_log", "writer_from_snapshot",
            "rebuild", "goals"} <= result.keys()
    assert result["read"]["events"] == result["events"] > 0
    # The rebuild, measured last, replays the first decisions' events too.
    assert result["rebuild"]["events"] > result["events"]
    for writer in (result["writer_from_log"], result["writer_from_snapshot"]):
        assert writer["first_decision"] == "accepted"
        for key in ("startup_seconds", "rss_mb", "first_decision_ms"):
            assert writer[key] > 0
        assert writer["startup_parts"]["tail_events"] >= 0 and writer["state_pickled_mb"]
    # The first start folds the whole log; the second reads the snapshot the first left.
    assert result["writer_from_log"]["startup_parts"]["tail_events"] == result["events"]
    assert result["writer_from_snapshot"]["startup_parts"]["tail_events"] < result["events"]
    for key in ("events_per_s", "peak_rss_mb"):
        assert result["rebuild"][key] > 0 and result["read"][key] > 0
