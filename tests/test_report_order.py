"""Ordered reports (issue 14): a per-instance sequence makes late reports stale no-ops."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import Engine, connect
from adapters.driver_reports import pod_report
from adapters.ports import PodObservation
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, instance, one, run, state

EXAMPLES = {"memory": 60, "sqlite": 10, "postgres": 8}
_ids = itertools.count()


def _report(kind: str, t: float, seq: int | None, **fields: Any) -> dict[str, Any]:
    extra = {} if seq is None else {"sequence": seq}
    return b.report(kind, t, instance_id="x", **extra, **fields)


def _exited(t: float, seq: int | None, code: int = 1, **fields: Any) -> dict[str, Any]:
    return _report("ReportContainerExited", t, seq, container="c0", exit_code=code, **fields)


def test_running_after_a_later_exit_no_longer_sticks(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _report("ReportInstanceRunning", 2, 1),
             _exited(30, 4), _report("ReportInstanceRunning", 45, 5))
    assert state(engine, "x") == "running"
    # The run before that exit arrives last: without sequences it would reopen the run,
    # then nothing would end the restart it began.
    late_exit = one(engine, _exited(20, 2))
    late_run = one(engine, _report("ReportInstanceRunning", 25, 3))
    for out in (late_exit, late_run):
        assert out.status == "accepted" and out.events == []
        assert out.note and out.note.startswith("stale report: sequence")
    assert state(engine, "x") == "running" and instance(engine, "x").sequence == 5


def test_a_stale_running_cannot_undo_a_restart(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _exited(20, 2))
    assert state(engine, "x") == "restarting"
    out = one(engine, _report("ReportInstanceRunning", 10, 1))
    assert out.note and out.note.startswith("stale") and state(engine, "x") == "restarting"


def test_equal_sequence_is_stale_and_absent_sequence_is_unordered(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _report("ReportInstanceStarting", 2, 7))
    again = one(engine, _report("ReportInstanceRunning", 3, 7))
    assert again.events == [] and state(engine, "x") == "starting"
    # A producer that sends no sequence keeps today's behaviour: the state decides.
    accepted(engine, _report("ReportInstanceRunning", 4, None))
    assert state(engine, "x") == "running" and instance(engine, "x").sequence == 7


def test_the_sequence_survives_a_restart_of_the_writer(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _exited(20, 4))
    engine.processor.forget()
    out = one(engine, _report("ReportInstanceRunning", 10, 3))
    assert out.note and out.note.startswith("stale") and state(engine, "x") == "restarting"


def test_started_at_bills_from_the_true_start_when_the_starting_report_is_late(
        engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _report("ReportInstanceRunning", 9, 1, started_at=b.at(2)))
    assert instance(engine, "x").state == "running"
    meter = engine.processor.world.billing.cells[b.CELL]
    start = meter.instances[(b.ACCOUNT, "x")].intervals[0][0]
    assert start == int((b.T0.timestamp() + 2) * 1_000_000)


def test_started_at_after_occurred_at_is_rejected(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    out = one(engine, _report("ReportInstanceRunning", 3, 1, started_at=b.at(4)))
    assert out.status == "rejected" and "started_at" in out.reasons[0].problem


def test_sequence_is_bounded(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    for bad in (-1, 2**63, "1", True):
        out = one(engine, _report("ReportInstanceRunning", 3, bad))  # type: ignore[arg-type]
        assert out.status == "rejected" and out.reasons[0].field == "sequence", bad


# --- the property: shuffled reports end where the ordered ones do ------------------------


@st.composite
def lifecycles(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """An OnFailure instance's reports in order (a node agent's numbering), and a shuffle.

    It starts (the starting report is sometimes lost), runs, crashes and restarts after its
    back-off a few times (runs shorter than the back-off reset), then maybe ends: it
    completes, or the node says it was terminated. Every report carries the Pod's startTime.
    """
    t = 2.0
    started = b.at(t)
    kinds: list[tuple[str, float, dict[str, Any]]] = []
    if draw(st.booleans()):
        kinds.append(("ReportInstanceStarting", t, {}))
    t += draw(st.integers(0, 60)) + 0.5
    kinds.append(("ReportInstanceRunning", t, {}))
    for k in range(draw(st.integers(0, 4))):
        t += draw(st.integers(1, 500))
        kinds.append(("ReportContainerExited", t, {"container": "c0", "exit_code": 1}))
        t += 10 * 2 ** k + draw(st.integers(0, 30))  # the back-off before restart k + 1
        kinds.append(("ReportInstanceRunning", t, {}))
    end = draw(st.sampled_from(["none", "complete", "terminated"]))
    t += draw(st.integers(1, 500))
    if end == "complete":
        kinds.append(("ReportContainerExited", t, {"container": "c0", "exit_code": 0}))
    elif end == "terminated":
        kinds.append(("ReportInstanceTerminated", t, {"reason": "OOMKilled"}))
    ordered = [b.report(kind, at, instance_id="x", sequence=seq, started_at=started, **more)
               for seq, (kind, at, more) in enumerate(kinds)]
    return ordered, draw(st.permutations(range(len(ordered))))


def _outcome_of(engine: Engine, reports: list[dict[str, Any]]) -> tuple[Any, ...]:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", policy="OnFailure"))
    for report in reports:  # one poll each: the order is the point
        accepted(engine, report)
    x = instance(engine, "x")
    meter = engine.processor.world.billing.cells[b.CELL]
    metered = meter.instances[(b.ACCOUNT, "x")]
    assert meter.book is not None
    horizon = int((b.T0.timestamp() + 86_400) * 1_000_000)
    bill = [(line.seconds, line.topup_seconds, line.amount_exact) for line in
            metered.lines(metered.intervals, horizon, meter.book)]
    ended = next((e.reason for _, e in engine.app.read()
                  if type(e).__qualname__ in ("Instance.Succeeded", "Instance.Failed")), None)
    return x.state, ended, [list(iv) for iv in metered.intervals], bill


def _fresh_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'order-{next(_ids)}.db'}"
    return request.getfixturevalue("pg_database").new_schema()


def test_shuffled_reports_end_in_the_ordered_state_and_bill(
        store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kind = store_url.split(":")[0].replace("postgresql", "postgres")

    @settings(max_examples=EXAMPLES[kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(lifecycles())
    def agree(case: tuple[list[dict[str, Any]], list[int]]) -> None:
        ordered, order = case
        with connect(_fresh_store(kind, request, tmp_path)) as first:
            expected = _outcome_of(first, ordered)
        with connect(_fresh_store(kind, request, tmp_path)) as second:
            shuffled = _outcome_of(second, [ordered[i] for i in order])
        assert shuffled == expected

    agree()


def test_reports_in_one_poll_are_ordered_by_sequence_too(engine: Engine) -> None:
    """Within one poll batch the same rule holds: the later-numbered exit wins."""
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    outs = run(engine, _exited(20, 2), _report("ReportInstanceRunning", 10, 1))
    assert [o.status for o in outs] == ["accepted", "accepted"]
    assert state(engine, "x") == "restarting"


def test_driver_reports_carry_the_facts_sequence() -> None:
    fact = PodObservation("exited", b.CELL, b.ACCOUNT, "x", b.NODE, b.T0, "x/uid/exited/c0#3",
                          7, container="c0", exit_code=1)
    report = pod_report(fact)
    assert report.type == "ReportContainerExited" and report.sequence == 7  # type: ignore
