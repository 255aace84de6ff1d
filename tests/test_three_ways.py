"""A simulated day applied three ways decides the same (docs/design.md §2.2, §7.2): in one
run, with a restart after every command, and from a snapshot plus the log's tail. The
outcomes and the domain events are byte-equal: every decision is a function of the state
and the command alone, never of what the process happened to see first."""

from __future__ import annotations

from collections.abc import Callable

from adapters.bootstrap import connect
from simulations.workloads import simulate
from tests import builders as b
from tests.test_determinism import _domain_events, _recording


def test_a_day_in_one_run_restarted_and_from_a_snapshot_is_byte_equal(
        fresh_store: Callable[[], str]) -> None:
    # Each way on a store of its own: on one store the later runs would only repeat ids.
    with connect("memory://") as first:
        commands = _recording(first)
        simulate(first, 24, seed=11, hours=24, tick_every_s=1800)
    assert len(commands) > 100

    with connect(fresh_store()) as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
        events_one_run = _domain_events(once)

    with connect(fresh_store()) as restarted:
        one_by_one = []
        for command in commands:
            restarted.processor.forget()  # a restarted writer knows only the store
            one_by_one += [o.to_json() for o in restarted.apply([command])]
        events_restarted = _domain_events(restarted)

    half = len(commands) // 2
    with connect(fresh_store()) as snapshotted:
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


def test_a_month_end_in_one_batch_or_one_by_one_is_byte_equal(store_url: str) -> None:
    """Finalising invoices decides alike in any batches, restarts between them: no
    InvoiceFinalized records the cell's chain head, which counts batches (§2.11). (The one
    batch runs on a store of its own: a second run on the same store would only repeat.)"""
    month = 31 * 86400  # from builders.T0 (1 March) to the end of March
    commands = b.lines(b.price_book(0), b.networks(), b.pool(min_nodes=1),
                       b.report("ReportNodeReady", 0.5, node_id="general-00001"),
                       b.create("w", 10), b.report("ReportInstanceRunning", 20, instance_id="w"),
                       b.tick(month - 86400), b.tick(month + 3601))  # March finalised
    with connect("memory://") as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
        events_one_run = _domain_events(once)
    with connect(store_url) as restarted:
        one_by_one = []
        for command in commands:
            restarted.processor.forget()
            one_by_one += [o.to_json() for o in restarted.apply([command])]
        events_restarted = _domain_events(restarted)
    assert all('"status":"accepted"' in o.replace(" ", "") for o in in_one_run), in_one_run
    assert any(topic.endswith("InvoiceFinalized") for _, _, topic, _ in events_one_run)
    assert one_by_one == in_one_run
    assert events_restarted == events_one_run
