"""A node agent must not walk its cell's clock (docs/design.md §2.9, §5.4): each accepted
report that changes something moves the clock, and node principals are not authenticated,
so reports are bounded by the newest time an operator vouched for (a Tick, an operator's
command), not only by the clock they just moved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.bootstrap import Engine, connect
from tests import builders as b
from tests.helpers import accepted, instance, one, run

DAY = 86_400
STEP = 80_000  # under a day: each report is within the skew of the clock the last one moved


def _setup(engine: Engine) -> None:
    """Operator's time 0 (price book, pool of four nodes); one node ready, one instance
    running on it."""
    accepted(engine, b.price_book(), b.networks(), b.pool(min_nodes=4),
             b.report("ReportNodeReady", 0.5, node_id="general-00001"),
             b.create("web", 1),
             b.report("ReportInstanceRunning", 2, instance_id="web"))


def _walk() -> list[dict[str, Any]]:
    """A rogue agent's stream: each report changes something (an exit, a run again, another
    node ready under another node's name), each a little under a day after the last."""
    walk = []
    for k in range(1, 7):
        t = 2 + k * STEP
        if k % 3 == 1:
            walk.append(b.report("ReportContainerExited", t, instance_id="web", container="c0",
                                 exit_code=1))
        elif k % 3 == 2:
            walk.append(b.report("ReportInstanceRunning", t, instance_id="web"))
        else:
            walk.append(b.report("ReportNodeReady", t, node_id=f"general-0000{1 + k // 3}"))
    return walk


def test_a_rogue_agent_cannot_walk_the_clock_past_vouched_time(engine: Engine) -> None:
    _setup(engine)
    outcomes = run(engine, *_walk())
    # The first is within a day of the operator's time 0; every later one is refused, by
    # whichever node it names. (Before: all six accepted, the clock at 5.6 days.)
    assert outcomes[0].status == "accepted"
    refused = outcomes[1:]
    assert all(o.status == "rejected" for o in refused)
    assert [r.code for r in refused[0].reasons] == ["clock_unvouched"]
    # (The later ones are more than a day past the clock, too.)
    assert {r.code for o in refused for r in o.reasons} == {"clock_unvouched", "clock_skew"}
    reason = refused[0].reasons[0]
    assert reason.field == "occurred_at"
    assert reason.problem == (
        "160002 s ahead of the newest time an operator vouched for "
        "(2026-03-01T00:00:00+00:00: a Tick or an operator's command); an agent's report may "
        "run at most 86400 s ahead of it")
    clock = engine.processor.world.clocks[b.CELL]
    assert clock == b.T0 + timedelta(seconds=2 + STEP) <= b.T0 + timedelta(seconds=DAY)
    # A tenant's stop an hour in takes effect at the clock: within a day of time 0.
    stop = one(engine, b.tenant("StopInstance", "web", 3600))
    assert stop.status == "accepted"
    assert instance(engine, "web").state_since == clock


def test_a_tick_vouches_for_time_and_the_bound_moves_with_it(engine: Engine) -> None:
    _setup(engine)
    late = b.report("ReportNodeReady", 1.5 * DAY, node_id="general-00002")
    assert [r.code for r in one(engine, late).reasons] == ["clock_skew"]
    accepted(engine, b.tick(DAY))  # the operator's time: a day
    assert engine.processor.world.vouched[b.CELL] == b.T0 + timedelta(days=1)
    accepted(engine, {**late, "command_id": "ready-2"})  # half a day past it
    too_far = b.report("ReportNodeReady", 2 * DAY + 1, node_id="general-00003")
    assert [r.code for r in one(engine, too_far).reasons] == ["clock_unvouched"]
    # Any accepted operator command vouches, not only a Tick; a tenant's claim never does.
    accepted(engine, b.create("db", 2 * DAY), b.pool(min_nodes=4, t=1.5 * DAY))
    assert engine.processor.world.vouched[b.CELL] == b.T0 + timedelta(days=1.5)
    accepted(engine, {**too_far, "command_id": "ready-3"})


def test_an_honest_tick_less_day_is_unaffected(engine: Engine) -> None:
    """Reports near the tenant requests around them, no Tick, within a day of the set-up."""
    _setup(engine)
    for k in range(1, 21):
        t = 2 + k * 4000
        report = b.report("ReportContainerExited", t, instance_id="web", container="c0",
                          exit_code=1) if k % 2 else b.report("ReportInstanceRunning", t,
                                                              instance_id="web")
        accepted(engine, b.create(f"w{k}", t - 10), report)
    accepted(engine, b.tenant("StopInstance", "web", 2 + 21 * 4000))
    assert instance(engine, "web").state_since == b.T0 + timedelta(seconds=2 + 21 * 4000)


def _lines() -> list[str]:
    tick = 1.2 * DAY
    commands = [b.price_book(), b.networks(), b.pool(min_nodes=4),
                b.report("ReportNodeReady", 0.5, node_id="general-00001"), b.create("web", 1),
                b.report("ReportInstanceRunning", 2, instance_id="web"),
                *_walk()[:3], b.tick(tick),
                b.report("ReportInstanceRunning", tick + STEP, instance_id="web"),
                b.report("ReportNodeReady", tick + 2 * STEP, node_id="general-00003")]
    return b.lines(*commands)


def test_the_bound_is_the_same_after_a_restart_and_from_a_snapshot(store_url: str) -> None:
    """The vouched time is state: derived from the log on a restart, carried by snapshots;
    the refusals (and their figures) are byte-equal three ways."""
    lines = _lines()
    with connect(store_url) as once:
        in_one_run = [o.to_json() for o in once.apply(lines)]
        vouched = once.processor.world.vouched[b.CELL]
    assert vouched == datetime(2026, 3, 2, 4, 48, tzinfo=UTC)
    codes = [(json.loads(o).get("reasons") or [{}])[0].get("code") for o in in_one_run]
    assert codes == [None] * 7 + ["clock_unvouched", "clock_skew", None, None,
                                  "clock_unvouched"]
    with connect(store_url) as restarted:
        one_by_one = []
        for line in lines:
            restarted.processor.forget()
            one_by_one += [o.to_json() for o in restarted.apply([line])]
        assert restarted.processor.world.vouched[b.CELL] == vouched
    half = 6
    with connect(store_url) as snapshotted:
        from_snapshot = [o.to_json() for o in snapshotted.apply(lines[:half])]
        assert snapshotted.processor.save_snapshots([b.CELL]) == 1
        snapshotted.processor.forget()
        from_snapshot += [o.to_json() for o in snapshotted.apply(lines[half:])]
    assert one_by_one == in_one_run
    assert from_snapshot == in_one_run
