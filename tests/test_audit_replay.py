"""`cis audit replay` (issue 13 item 2): projections rebuilt from the log match the live ones
row by row, and the commands kept beside their outcomes, re-run from empty, give the stored
events one by one; a hand-edited row or event is named. On every store."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.audit_replay import markdown, replay
from adapters.bootstrap import Engine, connect, engine_limits
from adapters.cli import main
from engine import processor
from projections.instances import INSTANCES
from simulations import workloads
from tests.helpers import run, simulated_lines
from tests.test_batch_placement import _creates, _nodes, _pool

HOURS = 8
OTHER_CELL = "az-2"


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """A simulated day's commands as intake lines, in the order they were decided, in two
    cells: the second a copy of the first under another name, interleaved with it so that
    large batches hold both."""
    sent = simulated_lines(30, seed=11, hours=HOURS, tick_every_s=900)
    other = [orjson.dumps({**orjson.loads(line), "cell": OTHER_CELL}) for line in sent]
    return [line for pair in zip(sent, other, strict=True) for line in pair]


def _apply(store_url: str, engine: Engine, lines: list[bytes], batch: int,
           tmp_path: Path) -> None:
    """Through `cis apply` (a memory store lives in one process: straight into it)."""
    if store_url.startswith("memory"):
        for lo in range(0, len(lines), batch):
            engine.apply(lines[lo:lo + batch])
        engine.update_projections()
        return
    path = tmp_path / "commands.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SystemExit) as done:
        main(["apply", "--store", store_url, "--role", "any", "--batch", str(batch),
              str(path)])
    assert done.value.code == 0


def _audit(store_url: str, engine: Engine, capsys: pytest.CaptureFixture[str],
           *args: str) -> tuple[int, str]:
    """`cis audit replay` (a memory store: the same function on the live engine)."""
    capsys.readouterr()
    if store_url.startswith("memory"):
        known_at = None
        if "--known-at" in args:
            known_at = datetime.fromisoformat(args[args.index("--known-at") + 1])
        result = replay(engine, engine_limits({}), known_at, progress=False)
        if "--report" in args:
            Path(args[args.index("--report") + 1]).write_text(markdown(result))
        return (0 if result.agree else 1), "\n".join(result.differences())
    with pytest.raises(SystemExit) as done:
        main(["audit", "replay", "--store", store_url, *args])
    return int(done.value.code or 0), capsys.readouterr().out


@pytest.fixture
def live(store_url: str) -> Any:
    """The store's engine for memory (the log lives in it); none needed for the others."""
    if store_url.startswith("memory"):
        with connect(store_url) as engine:
            yield engine
    else:
        yield None


@pytest.mark.parametrize("batch", [1, 1000])
def test_replay_of_a_simulated_day_agrees(store_url: str, live: Any, lines: list[bytes],
                                          batch: int, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _apply(store_url, live, lines, batch, tmp_path)
    report = tmp_path / "replay.md"
    code, out = _audit(store_url, live, capsys, "--report", str(report))
    assert code == 0, out
    text = report.read_text()
    assert "all agree" in text and "| instances |" in text
    assert "Cells re-run: 2" in text and "Cells with a differing event: 0" in text
    if not store_url.startswith("memory"):
        summary = json.loads(out.splitlines()[-1])
        assert summary["agree"] and summary["tables"]["instances"] > 0
        assert summary["events"] > summary["commands"]


def test_a_hand_edited_projection_row_is_named(store_url: str, live: Any, lines: list[bytes],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _apply(store_url, live, lines, 100, tmp_path)
    with _opened(store_url, live) as engine:
        row = engine.view.select(INSTANCES)[0]
        _update_row(engine, row["id"], "state", "forged")
    code, out = _audit(store_url, live, capsys)
    assert code == 1
    assert f"instances ({row['id']}): state live 'forged', from the log {row['state']!r}" \
        in out, out
    # The decisions still agree: a row is named, no event.
    assert not any(line.startswith(("differs: cell", "cell ")) for line in out.splitlines())


def test_a_hand_edited_event_is_a_differing_decision(store_url: str, live: Any,
                                                     lines: list[bytes], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    _apply(store_url, live, lines, 100, tmp_path)
    with _opened(store_url, live) as engine:
        forged = _forge_a_placement(engine)
    report = tmp_path / "replay.md"
    code, out = _audit(store_url, live, capsys, "--report", str(report))
    assert code == 1
    assert f"cell {workloads.CELL}: stored event #{forged} Instance.Scheduled" in out, out
    assert "state (node_id)" in out
    assert f"cell {OTHER_CELL}" not in out  # the other cell's decisions still agree
    assert "differences found" in report.read_text()


def test_a_cell_log_event_that_does_not_decode_is_named(
        store_url: str, live: Any, lines: list[bytes], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _apply(store_url, live, lines, 100, tmp_path)
    with _opened(store_url, live) as engine:
        log = engine.app.recorder.select_notifications(start=1, limit=10**9)
        target = [n for n in log if n.topic.endswith("CellLog.CommandsHandled")][3]
        _overwrite(engine, target, b"not json")
    code, out = _audit(store_url, live, capsys)
    assert code == 1
    assert f"stored event #{target.id} CellLog.CommandsHandled" in out, out
    assert "cannot be read" in out


def test_known_at_re_runs_only_what_was_recorded_by_then(
        store_url: str, live: Any, lines: list[bytes], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _apply(store_url, live, lines, 50, tmp_path)
    with _opened(store_url, live) as engine:
        forged = _forge_a_placement(engine, last=True)
    halfway = (workloads.DAY_START + timedelta(hours=HOURS / 4)).isoformat()
    report = tmp_path / "replay.md"
    code, out = _audit(store_url, live, capsys, "--known-at", halfway, "--report", str(report))
    assert code == 0, out  # the forged placement was recorded later
    text = report.read_text()
    assert "Recorded after the known-at time" in text and f"#{forged}" not in text
    assert _audit(store_url, live, capsys)[0] == 1


def test_batches_recorded_before_commands_were_kept_are_not_replayable(
        engine: Engine, lines: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    if engine.store.kind != "memory":
        return  # how the log was written does not depend on the store
    with monkeypatch.context() as patch:
        patch.setattr(processor, "kept_command", lambda command: None)  # the old entries
        engine.apply([line for line in lines if b'"az-2"' in line][:40])
    engine.apply([line for line in lines if b'"az-1"' in line])
    result = replay(engine, engine_limits({}), progress=False)
    assert result.agree, result.differences()
    assert result.decisions.not_replayable == {OTHER_CELL: 1}  # one batch, not re-run
    assert result.decisions.cells == {workloads.CELL}
    assert "Not replayable (not a failure)" in markdown(result)


def test_replay_keeps_each_batch_whole_for_batch_placement(engine: Engine) -> None:
    """With a placement window a create's node depends on its batch's other creates: the
    re-run keeps each recorded batch whole, so it places them alike. A repeat inside the
    batch (answered, never recorded) must not have taken part in the plan."""
    _pool(engine, 4)
    creates = _creates()
    outcomes = run(engine, creates[0], creates[1], creates[1], creates[2], creates[3])
    assert [o.status for o in outcomes] == ["accepted"] * 5
    assert None not in _nodes(engine)  # together: all placed (one by one, one waits)
    windowed = replace(engine_limits({}), placement_window=4)
    result = replay(engine, windowed, progress=False)
    assert result.agree, result.differences()
    # The same log re-run one by one places differently: the limits are part of the replay.
    one_by_one = replay(engine, engine_limits({}), progress=False)
    assert not one_by_one.agree and "Instance.Scheduled" in one_by_one.differences()[0]


# --- tampering by hand -------------------------------------------------------------------


class _opened:
    """The store's engine: the live one for memory, a new connection for the others."""

    def __init__(self, store_url: str, live: Engine | None):
        self.url, self.live, self.engine = store_url, live, None

    def __enter__(self) -> Engine:
        if self.live is not None:
            return self.live
        self.engine = connect(self.url)
        return self.engine

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.engine.close()


def _update_row(engine: Engine, key: str, column: str, value: str) -> None:
    if engine.store.kind == "memory":
        engine.view.tables[INSTANCES.name][(key,)][column] = value
        return
    mark = "?" if engine.store.kind == "sqlite" else "%s"
    table = engine.view._sql.qualify(INSTANCES.name)
    with engine.view.datastore.transaction(commit=True) as cursor:
        cursor.execute(f'UPDATE {table} SET "{column}" = {mark} WHERE "id" = {mark}',
                       (value, key))


def _forge_a_placement(engine: Engine, last: bool = False) -> int:
    """Move one stored placement of the first cell to another node, in the events table
    itself; answers its position in the log."""
    log = engine.app.recorder.select_notifications(start=1, limit=10**9)
    mine = {n.originator_id for n in log if n.originator_version == 1
            and getattr(engine.app.mapper.to_domain_event(n), "cell", "") == workloads.CELL}
    scheduled = [n for n in log
                 if n.topic.endswith("Instance.Scheduled") and n.originator_id in mine]
    target = scheduled[-1 if last else 0]
    state = orjson.loads(target.state)
    state["node_id"] = "forged-99999"
    _overwrite(engine, target, orjson.dumps(state))
    return target.id


def _overwrite(engine: Engine, target: Any, forged: bytes) -> None:
    """Overwrite one stored event's state in the events table itself."""
    recorder = engine.app.recorder
    if engine.store.kind == "memory":
        events = recorder._stored_events  # type: ignore[attr-defined]
        events[target.id - 1] = dataclasses.replace(events[target.id - 1], state=forged)
        return
    if engine.store.kind == "sqlite":
        table, mark = recorder.events_table_name, "?"  # type: ignore[attr-defined]
    else:
        table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'  # type: ignore[attr-defined]
        mark = "%s"
    with recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} AND "
                       f"originator_version = {mark}",
                       (forged, _uuid(engine, target.originator_id), target.originator_version))


def _uuid(engine: Engine, value: Any) -> Any:
    return value.hex if engine.store.kind == "sqlite" else value  # how each stores a UUID
