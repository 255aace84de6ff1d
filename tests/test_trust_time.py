"""Time is earned (issue 11): only accepted commands move a cell's clock; a command may run
ahead of it by a bounded skew; a Tick may move it by a bounded step and close a bounded
number of periods unless an operator asks to catch up; price books never reprice a finalised
period nor change currency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.bootstrap import Engine, engine_limits
from adapters.stores import BadConfiguration
from engine.limits import EngineLimits
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, domain_snapshot, event_count, one

DAY = 86_400
APRIL = int((datetime(2026, 4, 1, tzinfo=UTC) - b.T0).total_seconds())


def _codes(outcome) -> list[str | None]:  # type: ignore[no-untyped-def]
    return [r.code for r in outcome.reasons]


def _newest_time(engine: Engine) -> datetime:
    """The time the log has reached: what the default `as_of` of usage and invoices is."""
    from adapters.queries import newest_event_time
    found = newest_event_time(engine)
    assert found is not None
    return found


def _far(command: dict, when: str = "2099-01-01T00:00:00+00:00") -> dict:
    field = "issued_at" if "issued_at" in command else "occurred_at"
    return {**command, field: when}


# --- only accepted commands move a clock --------------------------------------------------


def test_a_rejected_command_never_moves_the_clock(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", 10))
    reached = _newest_time(engine)
    assert reached == b.T0 + timedelta(seconds=0.5)  # a tenant's claim does not move it
    outs = engine.apply([
        b.json.dumps(_far(b.create("y", pool="nope"))),  # rejected: no such pool
        b.json.dumps({**_far(b.create("z")), "cell": "ghost"}),  # a cell that does not exist
        b.json.dumps(b.tenant("StopInstance", "nobody", 20)),  # rejected, at a plausible time
    ])
    assert [o.status for o in outs] == ["rejected"] * 3
    assert _newest_time(engine) == reached  # issue 11: it was 2099, usage 0.02 → 32,912.85
    engine.processor.forget()  # the clocks a restarted writer derives from the log agree
    assert engine.processor.world.clocks[b.CELL] == reached
    assert "ghost" not in engine.processor.world.clocks


def test_a_command_may_run_ahead_of_its_cells_clock_by_the_skew_only(engine: Engine) -> None:
    cell_with_ready_node(engine)  # the clock: 0.5 s after T0
    before = domain_snapshot(engine)
    out = one(engine, b.create("x", 0.5 + DAY + 1))
    assert out.status == "rejected" and _codes(out) == ["clock_skew"]
    assert out.reasons[0].field == "issued_at"
    assert "86401 s ahead" in out.reasons[0].problem and "at most 86400 s" in out.reasons[0].problem
    report = one(engine, b.report("ReportNodeLost", 0.5 + 2 * DAY, node_id="general-00001",
                                  reason="gone"))
    assert _codes(report) == ["clock_skew"] and report.reasons[0].field == "occurred_at"
    assert domain_snapshot(engine) == before
    # Within the skew it is decided, but a tenant's time never moves the clock: a tenant
    # cannot walk "now" forward a skew at a time.
    accepted(engine, b.create("x", 0.5 + DAY))
    assert _codes(one(engine, b.create("y", 0.5 + 2 * DAY))) == ["clock_skew"]
    # The infrastructure's time does move it.
    accepted(engine, b.tick(0.5 + DAY))
    accepted(engine, b.create("y", 0.5 + 2 * DAY))


def test_the_skew_is_configurable(engine: Engine) -> None:
    engine.processor.limits = EngineLimits(max_skew_seconds=600, max_tenant_skew_seconds=60)
    cell_with_ready_node(engine)  # the clock: 0.5 s after T0
    assert _codes(one(engine, b.create("x", 61))) == ["clock_skew"]  # a tenant: 60 s
    accepted(engine, b.create("x", 60))
    lost = b.report("ReportNodeLost", 0.5 + 601, node_id="general-00001", reason="gone")
    assert _codes(one(engine, lost)) == ["clock_skew"]  # anyone else: 600 s
    # An agent's also past the operator's time (0: the price book and pool), not only past
    # the clock its own reports moved (0.5).
    lost = b.report("ReportNodeLost", 600.25, node_id="general-00001", reason="gone")
    out = one(engine, lost)
    assert _codes(out) == ["clock_unvouched"] and "at most 600 s" in out.reasons[0].problem


def test_a_new_cell_takes_its_first_clock_from_its_first_accepted_command(
        engine: Engine) -> None:
    tick = one(engine, b.tick(0))  # nothing was ever accepted in the cell
    assert tick.status == "rejected" and _codes(tick) == ["unknown_cell"]
    assert event_count(engine) > 0 and b.CELL not in engine.processor.world.clocks
    accepted(engine, b.price_book(5 * DAY))  # an operator opens the cell
    assert engine.processor.world.clocks[b.CELL] == b.T0 + timedelta(days=5)
    assert one(engine, b.pool(t=6 * DAY + 1)).status == "rejected"  # a day and a second on
    accepted(engine, b.pool(t=6 * DAY))


# --- ticks --------------------------------------------------------------------------------


def test_a_tick_far_ahead_is_refused_unless_it_catches_up(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", 1))
    before = domain_snapshot(engine)
    # Issue 11: one Tick dated 2199 finalised 2,085 months (2099 is the furthest allowed now).
    far = one(engine, {**b.tick(0), "now": "2099-12-31T00:00:00+00:00"})
    assert far.status == "rejected" and _codes(far) == ["tick_too_far", "tick_too_far"]
    assert "at most 2764800 s per tick" in far.reasons[0].problem
    assert "more than 2 periods (from 2026-03)" in far.reasons[1].problem
    step = one(engine, b.tick(0.5 + 32 * DAY + 1))
    assert _codes(step) == ["tick_too_far"]
    assert domain_snapshot(engine) == before
    assert _newest_time(engine) == b.T0 + timedelta(seconds=0.5)
    accepted(engine, b.tick(0.5 + 32 * DAY))  # a month and a day: the ticker was down
    caught = one(engine, b.tick(APRIL + 100 * DAY, catch_up=True))  # the operator says so
    assert caught.status == "accepted"
    assert caught.note and caught.note.startswith("finalised 2026-04 (0 invoice(s)), "
                                                  "2026-05 (0 invoice(s)), 2026-06")


def test_a_tick_may_finalise_a_bounded_number_of_periods(engine: Engine) -> None:
    engine.processor.limits = EngineLimits(max_tick_step_seconds=365 * DAY)
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", 1))
    three = one(engine, b.tick(APRIL + 61 * DAY + 3600))  # March, April and May have ended
    assert _codes(three) == ["tick_too_far"] and "(from 2026-03)" in three.reasons[0].problem
    two = one(engine, b.tick(APRIL + 30 * DAY + 3600))  # March and April
    assert two.status == "accepted"
    # (x never reported: it timed out at 301 s, issue 14)
    assert two.note == ("timed out 1 start(s); finalised 2026-03 (0 invoice(s)), 2026-04 "
                        "(0 invoice(s))")


# --- price books --------------------------------------------------------------------------


def test_a_price_version_inside_a_finalised_period_is_refused(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", 1), b.tick(APRIL + 3600))  # March is finalised
    before = domain_snapshot(engine)
    late = b.price_book(APRIL, rate_per_vcpu_second="0.5")  # (older would be expired)
    late["effective_from"] = b.at(20 * DAY)
    out = one(engine, late)
    # Both: it starts before the cell's clock, and inside a finalised period.
    assert out.status == "rejected" and _codes(out) == ["retroactive_price", "period_finalised"]
    assert "2026-03" in out.reasons[1].problem
    assert domain_snapshot(engine) == before
    ok = b.price_book(APRIL + 3600, rate_per_vcpu_second="0.5")
    accepted(engine, ok)


def test_a_price_book_keeps_its_currency(engine: Engine) -> None:
    cell_with_ready_node(engine)
    before = domain_snapshot(engine)
    euro = one(engine, b.price_book(10, currency="EUR"))
    assert euro.status == "rejected" and _codes(euro) == ["currency_change"]
    assert euro.reasons[0].field == "currency"
    finer = one(engine, b.price_book(10, minor_unit=3))
    assert _codes(finer) == ["currency_change"] and finer.reasons[0].field == "minor_unit"
    assert domain_snapshot(engine) == before
    accepted(engine, b.price_book(10, currency="USD", minor_unit=2))


def test_the_composition_root_reads_the_limits_from_the_environment() -> None:
    assert engine_limits({}) == EngineLimits()
    assert engine_limits({"CIS_MAX_SKEW_SECONDS": "60"}).max_skew_seconds == 60
    for bad in ("abc", "0", "-5", "²"):
        with pytest.raises(BadConfiguration, match="CIS_MAX_SKEW_SECONDS"):
            engine_limits({"CIS_MAX_SKEW_SECONDS": bad})
