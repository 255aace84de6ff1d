"""Billing laid out by period (docs/design.md §3.5): usage and invoice rows keyed account
first and period second, queries for a period that read only that period's rows, and the
writer's meter as plain data that pickles. On every store.

Times are seconds after builders.T0 = 2026-03-01 00:00 UTC, as in test_billing_engine.
"""

from __future__ import annotations

import itertools
import pickle
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import queries
from adapters.bootstrap import Engine, connect
from engine.billing import BillingMeter, micros
from engine.billing.price_book import PriceBook, PriceVersion
from engine.policies.spec_catalogue import Spec
from projections.invoices import INVOICE_ADJUSTMENTS, INVOICE_LINES, INVOICES
from projections.usage import USAGE, USAGE_LATE, USAGE_OPEN
from tests import builders as b
from tests.helpers import accepted, one
from tests.test_billing_engine import APRIL, DAY, cell, running
from tests.test_billing_properties import (
    ACCOUNTS,
    B1,
    B2,
    B3,
    BIG_NODE,
    SPECS,
    START,
    US,
    Scenario,
    _fresh_store,
    _kept_current,
    _publish,
    _step,
    _versions,
    at,
    check,
)

MARCH_END = APRIL  # seconds after T0


def _history(engine: Engine) -> None:
    """x runs from February into April; y only in March; z runs from late February and is
    stopped by a report that arrives after February was finalised."""
    cell(engine)
    running(engine, "x", -100)
    running(engine, "z", -50)
    one(engine, b.tick(3600))  # February finalised: x and z billed to its end
    one(engine, b.report("ReportInstanceTerminated", -20, instance_id="z", reason="late"))
    running(engine, "y", 7200)
    accepted(engine, b.tenant("StopInstance", "y", 7300))
    one(engine, b.tick(MARCH_END + 3600))  # March finalised, with z's credit
    accepted(engine, b.tenant("StopInstance", "x", MARCH_END + 7200))
    engine.update_projections()


def test_usage_rows_are_kept_per_period(engine: Engine) -> None:
    cell(engine)
    one(engine, b.tick(MARCH_END - 3600))  # the ticker keeps the cell's clock
    running(engine, "x", MARCH_END - 10.5)
    engine.update_projections()
    (open_row,) = engine.view.select(USAGE_OPEN, {"account": "acme"})
    assert open_row["instance_id"] == "x"
    accepted(engine, b.tenant("StopInstance", "x", MARCH_END + 20.25))
    engine.update_projections()
    assert engine.view.select(USAGE_OPEN, {"account": "acme"}) == []
    rows = {r["period"]: r for r in engine.view.select(USAGE, {"account": "acme"})}
    # Seconds MARCH_END-11 .. -1 in March (11), 0 .. 20 in April (21).
    assert {p: r["billed_seconds"] for p, r in rows.items()} == {"2026-03": 11, "2026-04": 21}
    assert rows["2026-03"]["intervals"] == rows["2026-04"]["intervals"]
    for table in (USAGE, INVOICES, INVOICE_LINES):
        assert table.key[:2] == ("account", "period")
    assert INVOICE_ADJUSTMENTS.key[:2] == ("account", "billed_in")


class Recording:
    """A Reader whose view notes every select."""

    def __init__(self, engine: Engine) -> None:
        self.app, self._view, self.selects = engine.app, engine.view, list[tuple[str, dict]]()
        self.view = self

    def select(self, table: Any, where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.selects.append((table.name, dict(where or {})))
        return self._view.select(table, where)

    def max_tracking_id(self, name: str) -> int | None:
        return self._view.max_tracking_id(name)


def _touched(reader: Recording) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for name, where in reader.selects:
        found.setdefault(name, []).append(where)
    return found


def test_a_period_query_reads_only_that_period(engine: Engine) -> None:
    _history(engine)
    as_of = b.T0 + timedelta(seconds=MARCH_END + 7300)
    everything = queries.invoices(engine, "acme", as_of=as_of)["invoices"]
    assert {(i["period"], i["status"]) for i in everything} == {
        ("2026-02", "finalised"), ("2026-03", "finalised"), ("2026-04", "open")}
    for period in ("2026-02", "2026-03"):
        reader = Recording(engine)
        got = queries.invoices(reader, "acme", period, as_of)["invoices"]  # type: ignore[arg-type]
        assert got == [i for i in everything if i["period"] == period]
        touched = _touched(reader)
        assert USAGE.name not in touched  # a finalised period is its invoice rows
        for name in (INVOICES.name, INVOICE_LINES.name):
            assert touched[name] == [{"account": "acme", "period": period}]
        assert touched[INVOICE_ADJUSTMENTS.name] == [{"account": "acme", "billed_in": period}]
    march = [i for i in everything if i["period"] == "2026-03"][0]
    assert [(a["instance_id"], a["period"]) for a in march["adjustments"]] == [("z", "2026-02")]

    reader = Recording(engine)
    (april,) = queries.invoices(reader, "acme", "2026-04", as_of)["invoices"]  # type: ignore[arg-type]
    assert april == [i for i in everything if i["period"] == "2026-04"][0]
    assert [(x["instance_id"], x["seconds"]) for x in april["lines"]] == [("x", 7200)]
    touched = _touched(reader)
    assert touched[USAGE.name] == [{"account": "acme", "period": "2026-04"}]
    assert touched[USAGE_OPEN.name] == [{"account": "acme"}]
    assert touched[USAGE_LATE.name] == [{"account": "acme", "closed": "2026-03"}]


def test_usage_of_one_period(engine: Engine) -> None:
    _history(engine)
    as_of = b.T0 + timedelta(seconds=MARCH_END + 7300)
    whole = {i["instance_id"]: i for i in queries.usage(engine, "acme", as_of)["instances"]}
    parts = [{i["instance_id"]: i for i in queries.usage(engine, "acme", as_of, p)["instances"]}
             for p in ("2026-02", "2026-03", "2026-04")]
    assert sorted(parts[0]) == ["x", "z"] and sorted(parts[1]) == ["x", "y"]
    assert sorted(parts[2]) == ["x"]
    for name, line in whole.items():
        assert line["billed_seconds"] == sum(p[name]["billed_seconds"] for p in parts
                                             if name in p)
        assert Decimal(line["amount"]) == sum(Decimal(p[name]["amount"]) for p in parts
                                              if name in p)


def test_explain_a_line_whose_seconds_a_late_report_took_away(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A report a month late: only a command-id retention that long lets it be decided.
    monkeypatch.setenv("CIS_COMMAND_ID_RETENTION_SECONDS", str(60 * DAY))
    with connect(store_url) as engine:
        cell(engine)
        running(engine, "x", -100)
        one(engine, b.tick(3600))  # February finalised: x billed on to its end
        one(engine, b.tick(MARCH_END + 3600))  # March too: x ran all month
        accepted(engine, b.report("ReportInstanceTerminated", -40, instance_id="x",
                                  reason="late"))
        engine.update_projections()
        as_of = b.T0 + timedelta(seconds=MARCH_END + 3600)
        (line,) = queries.explain(engine, "acme", "x", "2026-03", as_of)
    # Explained as billed: the interval was open at March's close (the late report that
    # took these seconds away is in the adjustments, pending).
    (held,) = line["intervals"]
    assert line["status"] == "finalised" and held["closed_by"] is None
    assert held["seconds_in_line"] == line["line"]["seconds"] == 31 * DAY
    assert [(a["period"], a["amount"]) for a in line["adjustments"]] == [
        ("2026-02", "-0.24"), ("2026-03", f"-{Decimal('0.006') * 31 * DAY:.2f}")]
    assert all(a["corrects"] == [] for a in line["adjustments"])  # pending: April's invoice


def test_the_writers_meter_pickles_with_late_marks(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", -100)
    running(engine, "y", -30.5, account="globex")
    one(engine, b.tick(3600))
    one(engine, b.report("ReportInstanceTerminated", -40, instance_id="x", reason="late"))
    meter = BillingMeter()
    for _, event in engine.app.read():
        meter.observe(event)
    copy = pickle.loads(pickle.dumps(meter))
    now = micros(b.T0 + timedelta(seconds=MARCH_END + 3600))
    assert copy.cells[b.CELL].dirty and copy.cells[b.CELL].instances
    (period,) = copy.cells[b.CELL].due_periods(now, 1)
    assert copy.cells[b.CELL].invoices(period, now) == meter.cells[b.CELL].invoices(period, now)


def test_a_unit_price_is_spelled_as_its_own_spec() -> None:
    """The price book remembers unit prices; equal specs spelled apart ("1", "1.0") must not
    share an answer, or one caller's spelling would leak into another's invoice line."""
    book = PriceBook((PriceVersion(1, 0, Decimal("0.01"), Decimal("0.001"), "EUR", 2),))
    first = book.unit_price(0, "runc", Spec(Decimal("1"), Decimal("2")))[1]
    second = book.unit_price(0, "runc", Spec(Decimal("1.0"), Decimal("2.0")))[1]
    assert (str(first), str(second)) == ("0.012", "0.0120")


# --- pending adjustments against the auditor's model --------------------------------------------
# The open invoice re-rates only the instances a late report changed since the last close
# (usage_late); the auditor re-rates every instance. Histories here always have reports that
# arrive after the period they speak of was finalised, and some stay pending at the end.


@st.composite
def late_histories(draw: st.DrawFn) -> Scenario:
    versions = draw(_versions())
    commands: list[tuple[int, int, dict[str, Any]]] = []
    seq = itertools.count()

    def add(arrival: int, command: dict[str, Any]) -> None:
        commands.append((arrival, next(seq), command))

    for v in versions:
        add(START * US, _publish(v))
    # Instances wait on their node up to a day: a start reported late still finds them.
    pool = b.pool(kind="shared", min_nodes=1, max_nodes=1, node_models=[BIG_NODE],
                  scheduled_timeout_seconds=86_400, starting_timeout_seconds=86_400)
    pool["issued_at"] = at(START * US)
    add(START * US, pool)
    networks = b.networks()
    networks["issued_at"] = at(START * US)
    add(START * US, networks)
    ready = b.report("ReportNodeReady", 0, node_id="general-00001")
    ready["occurred_at"] = at(START * US + 1)
    add(START * US + 1, ready)
    month_end = draw(st.sampled_from([B1, B2])) * US
    closes = month_end + 7200 * US + 1  # past every drawn grace (at most 7200 s)
    for i in range(draw(st.integers(1, 4))):
        name, account = f"i-{i}", draw(st.sampled_from(ACCOUNTS))
        vcpu, gib = draw(st.sampled_from(SPECS))
        t = month_end - draw(st.integers(2, 600)) * US + draw(st.integers(0, US - 1))
        create = b.create(name, 0, account, vcpu=vcpu, memory_gib=gib, runtime="kata",
                          policy="Never")  # every end report ends it: nothing runs on
        create["issued_at"] = at(t)
        add(t, create)
        for kind in ("running", draw(st.sampled_from(["terminated", "exit0", "exit1"]))):
            t += draw(st.sampled_from([1, 1000, US, 30 * US, 600 * US]))
            late = closes + draw(st.integers(0, 600)) * US  # after the period closed
            add(late if draw(st.integers(0, 2)) else t, _step(kind, name, account, t))
    ticks = {closes - 1}
    if draw(st.booleans()):  # the next period closes too: what was pending is finalised
        ticks.add((B3 if month_end == B2 * US else B2) * US + 7201 * US)
    for t in sorted(ticks):
        tick = b.tick(0, catch_up=True)
        tick["now"] = at(t)
        add(t, tick)
    horizon = max(p for p, _, _ in commands)
    as_of = draw(st.sampled_from([horizon, closes + 3600 * US, month_end + 60 * US]))
    return Scenario(versions, _kept_current(sorted(commands, key=lambda c: (c[0], c[1]))),
                    as_of)


PENDING_EXAMPLES = {"memory": 40, "sqlite": 8, "postgres": 4}


def test_pending_adjustments_agree_with_the_reference(
        store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kind = store_url.split(":")[0].replace("postgresql", "postgres")

    @settings(max_examples=PENDING_EXAMPLES[kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(late_histories())
    def agree(scenario: Scenario) -> None:
        with connect(_fresh_store(kind, request, tmp_path)) as engine:
            check(engine, scenario)

    agree()
