"""Property: on every store, the engine's invoices (finalised by ticks, adjusted after late
reports, and the open period accrued to any as_of) agree to the cent with the auditor's model
(tests/test_billing_reference_model.py over tests/reference_billing.py).

Scenarios: random lifecycles around two month ends (restart storms inside one second, node
loss, stuck pending, tenant stops and deletes), random effective-dated price versions with
minimum seconds, grace and kata rates, ticks at and around period end + grace, and reports
that arrive hours late, after the period they speak of was finalised.
"""

from __future__ import annotations

import calendar
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import Engine, connect
from tests import builders as b
from tests.test_billing_reference_model import Auditor, engine_invoices, log_instances

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
B1, B2, B3 = (calendar.timegm((2026, m, 1, 0, 0, 0)) for m in (2, 3, 4))
START = B1 - 86_400
ACCOUNTS = ("acme", "globex")
SPECS = [("0.5", "1"), ("0.25", "0.5"), ("1", "2"), ("0.75", "1.5")]
STEPS = ["starting", "running", "running", "exit0", "exit1", "exit1", "terminated", "stop",
         "delete"]
TICK_OFFSETS = [-1800 * US, 0, 1800 * US, 3600 * US - 1, 3600 * US, 3600 * US + 1, 7200 * US,
                7200 * US + 1, 10_800 * US, 18_000 * US]
BIG_NODE = {"name": "8C16G", "millicores": 8000, "memory_mib": 16384}
EXAMPLES = {"memory": 100, "sqlite": 20, "postgres": 6}
_ids = itertools.count()


def at(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=t_us)).isoformat()


@dataclass
class Scenario:
    versions: list[dict[str, Any]]  # auditor shape
    commands: list[tuple[int, int, dict[str, Any]]]  # (processed at µs, seq, command)
    as_of_us: int


def _rate(draw: st.DrawFn) -> Decimal:
    digits = draw(st.sampled_from([0, 1, 5, 25, 125, 1234, 99_999]) | st.integers(0, 10**6))
    return Decimal(digits).scaleb(-draw(st.sampled_from([4, 5, 6, 7, 9])))


@st.composite
def _versions(draw: st.DrawFn) -> list[dict[str, Any]]:
    near = st.builds(lambda m, o, j: m + o + j, st.sampled_from([B1, B2]),
                     st.sampled_from([-7200, -600, -1, 0, 1, 600, 3600]), st.integers(-60, 60))
    starts = [START, *sorted(draw(st.sets(near, max_size=2)))]
    minor_unit = draw(st.sampled_from([0, 2, 3]))
    out = []
    for number, eff in enumerate(starts, 1):
        kata = draw(st.booleans())
        out.append({
            "version": number, "effective_from": eff, "rate_vcpu_s": _rate(draw),
            "rate_gib_s": _rate(draw), "minor_unit": minor_unit,
            "min_seconds": draw(st.sampled_from([0, 0, 1, 5, 60, 600])),
            "grace_seconds": draw(st.sampled_from([0, 60, 3600, 7200])),
            "runtime_rates": {"kata": (_rate(draw), _rate(draw))} if kata else {},
        })
    return out


def _publish(v: dict[str, Any]) -> dict[str, Any]:
    command = b.price_book(0, rate_per_vcpu_second=str(v["rate_vcpu_s"]),
                           rate_per_gib_second=str(v["rate_gib_s"]), currency="EUR",
                           minor_unit=v["minor_unit"], min_seconds=v["min_seconds"],
                           grace_seconds=v["grace_seconds"])
    command.update(issued_at=at(START * US), effective_from=at(v["effective_from"] * US))
    if v["runtime_rates"]:
        rv, rg = v["runtime_rates"]["kata"]
        command["runtime_rates"] = {"kata": {"rate_per_vcpu_second": str(rv),
                                             "rate_per_gib_second": str(rg)}}
    return command


# Hypothesis draws small integers from wide ranges far more often than large ones, so
# durations are a drawn scale times a small factor.
def _delay(draw: st.DrawFn) -> int:
    hours = draw(st.sampled_from([0, 0, 0.5, 1, 2, 3, 5, 8]))
    return int(hours * 3600 * US) + draw(st.integers(0, 10 * US)) if hours else 0


def _gap(draw: st.DrawFn) -> int:
    return draw(st.sampled_from([1, 1000, US, 60 * US])) * draw(st.integers(1, 60))


def _near(draw: st.DrawFn, lo_s: int, hi_s: int) -> int:
    """Microseconds near a month end: lo_s..hi_s seconds around it, often on the edge."""
    base = draw(st.sampled_from([B1, B2])) * US
    offset = draw(st.sampled_from([lo_s, -3600, -600, -1, 0, 1, 600, hi_s])) * US
    return base + offset + draw(st.integers(-US, US))


def _step(kind: str, name: str, account: str, t: int) -> dict[str, Any]:
    if kind in ("stop", "delete"):
        command = b.tenant("StopInstance" if kind == "stop" else "DeleteInstance", name, 0,
                           account)
        command["issued_at"] = at(t)
        return command
    fields: dict[str, Any] = {"instance_id": name, "account": account}
    kinds = {"starting": "ReportInstanceStarting", "running": "ReportInstanceRunning",
             "terminated": "ReportInstanceTerminated"}
    if kind.startswith("exit"):
        fields.update(container="c0", exit_code=int(kind[-1]))
        report = "ReportContainerExited"
    else:
        report = kinds[kind]
        if kind == "terminated":
            fields["reason"] = "OOMKilled"
    command = b.report(report, 0, **fields)
    command["occurred_at"] = at(t)
    return command


@st.composite
def _lifecycle(draw: st.DrawFn) -> list[str]:
    """Mostly start, run, restart a few times, end; sometimes anything in any order."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.lists(st.sampled_from(STEPS), max_size=6))
    restarts = draw(st.lists(st.sampled_from(["exit1", "running"]), max_size=4))
    end = draw(st.sampled_from(["terminated", "stop", "delete", "exit0", "exit1"]))
    return ["starting"] * draw(st.integers(0, 1)) + ["running", *restarts, end]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    versions = draw(_versions())
    commands: list[tuple[int, int, dict[str, Any]]] = []
    seq = itertools.count()

    def add(t: int, command: dict[str, Any], delay: int = 0) -> None:
        commands.append((t + delay, next(seq), command))

    for v in versions:
        add(START * US, _publish(v))
    pool = b.pool(kind="shared", min_nodes=1, max_nodes=1, node_models=[BIG_NODE])
    pool["issued_at"] = at(START * US)
    add(START * US, pool)
    for account in ACCOUNTS:
        networks = b.networks(account)
        networks["issued_at"] = at(START * US)
        add(START * US, networks)
    ready = b.report("ReportNodeReady", 0, node_id="general-00001")
    ready["occurred_at"] = at(START * US + 1)
    add(START * US + 1, ready)
    times = []
    for i in range(draw(st.integers(1, 4))):
        name, account = f"i-{i}", draw(st.sampled_from(ACCOUNTS))
        vcpu, gib = draw(st.sampled_from(SPECS))
        t = _near(draw, -5400, 1800)
        create = b.create(name, 0, account, vcpu=vcpu, memory_gib=gib,
                          policy=draw(st.sampled_from(["Always", "Always", "OnFailure",
                                                       "Never"])),
                          runtime=draw(st.sampled_from(["runc", "runc", "kata"])))
        create["issued_at"] = at(t)
        add(t, create, draw(st.sampled_from([0, 0, 0, 0, 1])) * _delay(draw))
        # From some step on, the reports arrive late (a partitioned node agent catching up),
        # in order; the tenant's final stop comes after them.
        kinds = [*draw(_lifecycle()), "stop"]
        cut = draw(st.sampled_from([1, 2, len(kinds) - 1]) | st.integers(0, len(kinds)))
        late = _delay(draw)
        after_close = draw(st.booleans())  # or until the month before is surely finalised
        for k, kind in enumerate(kinds):
            t += _gap(draw)
            delay = late
            month_end = next((m * US for m in (B1, B2) if 0 < m * US - t < 6 * 3600 * US), None)
            if after_close and month_end is not None:
                delay = month_end + 7201 * US - t + late
            add(t, _step(kind, name, account, t), delay if k >= cut else 0)
        times.append(t)
    if draw(st.sampled_from([False, False, False, True])):
        t = _near(draw, -3600, 1800)
        lost = b.report("ReportNodeLost", 0, node_id="general-00001", reason="hypervisor")
        lost["occurred_at"] = at(t)
        add(t, lost, _delay(draw))
    ticks = draw(st.sets(st.sampled_from([m * US + g for m in (B1, B2) for g in TICK_OFFSETS]),
                         max_size=8))
    ticks |= {B3 * US + 18_000 * US} if draw(st.integers(0, 2)) == 0 else set()
    ticks |= {m * US + 7200 * US + 1 for m in (B1, B2) if draw(st.booleans())}
    for t in sorted(ticks):
        tick = b.tick(0)
        tick["now"] = at(t)
        add(t, tick)
    horizon = max(p for p, _, _ in commands)
    as_of = draw(st.sampled_from([horizon, max(times), B1 * US + 1800 * US,
                                  B2 * US + 7200 * US + 1]))
    return Scenario(versions, _kept_current(sorted(commands, key=lambda c: (c[0], c[1]))),
                    as_of)


def _kept_current(commands: list[tuple[int, int, dict[str, Any]]]
                  ) -> list[tuple[int, int, dict[str, Any]]]:
    """A ticker keeps the cell's clock current (a command over a day ahead of it is refused):
    an operator's catch-up tick just before any command that comes 20 h after the last."""
    out, last = [], START * US
    for arrival, seq, command in commands:
        if arrival - last > 20 * 3600 * US:
            heartbeat = b.tick(0, catch_up=True)
            heartbeat["now"] = at(arrival - 1)
            out.append((arrival - 1, -1, heartbeat))
            last = arrival - 1
        if command["type"] == "Tick":
            last = arrival
        out.append((arrival, seq, command))
    return out


def check(engine: Engine, scenario: Scenario) -> None:
    auditor = Auditor(scenario.versions)
    batch: list[str] = []
    for _, _, command in scenario.commands:
        if command["type"] != "Tick":
            batch.append(json.dumps(command))
            continue
        engine.apply([*batch, json.dumps(command)])
        batch.clear()
        now = datetime.fromisoformat(command["now"])
        auditor.tick((now - EPOCH) // timedelta(microseconds=1), log_instances(engine))
    if batch:
        engine.apply(batch)
    engine.update_projections()
    instances = log_instances(engine)
    as_of = EPOCH + timedelta(microseconds=scenario.as_of_us)
    finalised, open_ = engine_invoices(engine, ACCOUNTS, as_of)
    assert finalised == auditor.invoices
    assert open_ == auditor.open_invoices(scenario.as_of_us, instances)


def _fresh_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'cis-{next(_ids)}.db'}"
    return request.getfixturevalue("pg_database").new_schema()


def test_invoices_agree_with_the_reference(store_url: str, request: pytest.FixtureRequest,
                                           tmp_path: Path) -> None:
    kind = store_url.split(":")[0].replace("postgresql", "postgres")

    @settings(max_examples=EXAMPLES[kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def agree(scenario: Scenario) -> None:
        with connect(_fresh_store(kind, request, tmp_path)) as engine:
            check(engine, scenario)

    agree()
