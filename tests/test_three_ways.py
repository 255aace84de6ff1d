"""A simulated day applied three ways decides the same (docs/design.md §2.2, §7.2): in one
run, with a restart after every command, and from a snapshot plus the log's tail. The
outcomes and the domain events are byte-equal: every decision is a function of the state
and the command alone, never of what the process happened to see first."""

from __future__ import annotations

from adapters.bootstrap import connect
from simulations.workloads import simulate
from tests import builders as b
from tests.test_determinism import _domain_events, _recording


def test_a_day_in_one_run_restarted_and_from_a_snapshot_is_byte_equal(store_url: str) -> None:
    with connect("memory://") as first:
        commands = _recording(first)
        simulate(first, 24, seed=11, hours=24, tick_every_s=1800)
    assert len(commands) > 100

    with connect(store_url) as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
        events_one_run = _domain_events(once)

    with connect(store_url) as restarted:
        one_by_one = []
        for command in commands:
            restarted.processor.forget()  # a restarted writer knows only the store
            one_by_one += [o.to_json() for o in restarted.apply([command])]
        events_restarted = _domain_events(restarted)

    half = len(commands) // 2
    with connect(store_url) as snapshotted:
        from_snapshot = [o.to_json() for o in snapshotted.apply(commands[:half])]
        processor = snapshotted.processor
        assert processor.save_snapshots([b.CELL]) == 1
        processor.forget()  # the rest from the snapshot and the (empty) tail
        from_snapshot += [o.to_json() for o in snapshotted.apply(commands[half:])]
        assert processor.snapshots is not None and processor.snapshots.load(b.CELL)
        events_from_snapshot = _domain_events(snapshotted)

    assert one_by_one == in_one_run
    assert from_snapshot == in_one_run
    assert events_restarted == events_one_run
    assert events_from_snapshot == events_one_run
