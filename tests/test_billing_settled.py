"""A deleted instance's usage is packed until its periods are finalised (docs/design.md §7.4):
the meter's dicts hold only instances that can still change, a deleted one costs a packed row
(~40 bytes, not ~600), and every invoice -- lines, adjustments after late reports, across
snapshots and eviction -- is byte-identical to the meter that kept them all unpacked."""

from __future__ import annotations

import calendar
import json
import pickle
import random
import tracemalloc
from decimal import Decimal
from typing import Any

import pytest

from adapters.bootstrap import Engine, connect
from engine.billing import settled
from engine.billing.cell_meter import CellMeter, Metered
from engine.billing.invoice import Invoice
from engine.billing.periods import US_PER_S
from tests import builders as b
from tests.helpers import accepted
from tests.test_billing_engine import APRIL, BIG_NODE, DAY, RATES

US = US_PER_S
FEB1, MAR1, APR1 = (calendar.timegm((2026, m, 1, 0, 0, 0)) for m in (2, 3, 4))
SPECS = [("0.25", "0.5"), ("0.5", "1"), ("0.50", "1"), ("1", "2")]  # "0.50" bills apart


class Unpacked(CellMeter):
    """The meter as it was: a deleted instance stays a `Metered` in its dicts."""

    def deleted(self, m: Metered) -> None:
        m.deleted = True


def _meter(kind: type[CellMeter]) -> CellMeter:
    meter = kind("az-1")
    meter.publish({"number": 1, "effective_from": FEB1 - 86_400, "currency": "EUR",
                   "minor_unit": 2, "min_seconds": 60, "grace_seconds": 3600,
                   "rate_per_vcpu_second": "0.0000113", "rate_per_gib_second": "0.0000012",
                   "runtime_rates": {"kata": {"rate_per_vcpu_second": "0.000013",
                                              "rate_per_gib_second": "0.0000015"}}})
    return meter


def _new(meter: CellMeter, i: int) -> Metered:
    vcpu, gib = SPECS[i % len(SPECS)]
    m = meter.metered(f"i-{i:05d}", f"acct-{i % 7}", "kata" if i % 5 == 0 else "runc",
                      (Decimal(vcpu), Decimal(gib)), (Decimal(vcpu), Decimal(gib)))
    meter.instances[(m.account, m.name)] = m
    return m


def _close_due(meter: CellMeter, now_us: int) -> list[Invoice]:
    """What finalise_periods records and the observer then follows, for every due period."""
    out = []
    while (period := meter.due(now_us)) is not None:
        invoices = meter.invoices(period, now_us)
        for invoice in invoices:
            meter.invoiced(invoice.account)
        meter.period_closed(period)
        out += invoices
    return out


def _month_of_instances(kind: type[CellMeter], n: int, seed: int, pickle_at: int | None = None,
                        close_march: bool = True) -> tuple[CellMeter, list[Invoice]]:
    """n instances around the end of February: runs, restarts through unbilled states, empty
    intervals, deletes; February closed an hour into March, then some instances' reports of
    its last hours arrive (late), some of those instances then deleted; March closed. The
    same random choices for every kind of meter."""
    rng = random.Random(seed)
    meter = _meter(kind)
    close_feb = (MAR1 + 3600) * US
    # (processed at, time µs, order written, instance, state)
    script: list[tuple[int, int, int, int, str]] = []
    for i in range(n):
        t = (FEB1 + 20 * 86_400) * US + rng.randrange(16 * 86_400 * US)
        if i % 9 == 0:  # begins in the hours whose reports come late
            t = MAR1 * US - rng.randrange(6 * 3600 * US)
        states = rng.choice([["running", "stopped", "deleted"],
                             ["starting", "running", "failed", "deleted"],
                             ["running", "scheduled", "running", "stopped", "deleted"],
                             ["unschedulable", "deleted"], ["running", "deleted"],
                             ["running", "stopped"], ["running"]])
        cut = (MAR1 - 6 * 3600) * US if i % 9 == 0 else close_feb  # late from here on
        for state in states:
            script.append((close_feb if cut <= t < close_feb else t, t, len(script), i, state))
            t += rng.choice([0, 1, 499_999, US, 59 * US, 3600 * US, rng.randrange(86_400 * US)])
    script.sort()
    metered: dict[int, Metered] = {}
    invoices: list[Invoice] = []
    for k, (processed, t, _, i, state) in enumerate(script):
        if processed >= close_feb and meter.closed is None:
            invoices += _close_due(meter, close_feb)
        if k == pickle_at:
            meter = pickle.loads(pickle.dumps(meter))
            metered = {j: meter.instances[(m.account, m.name)] for j, m in metered.items()}
        m = metered.get(i)
        if m is None:
            m = metered[i] = _new(meter, i)
        meter.transition(m, state, t, 2 + k)
        if state == "deleted":
            meter.deleted(m)
            del metered[i]
    if close_march:
        invoices += _close_due(meter, (APR1 + 3600) * US)
    return meter, invoices


def test_deleted_instances_leave_the_dicts_for_packed_rows_that_go_once_finalised() -> None:
    meter, _ = _month_of_instances(CellMeter, 900, seed=1, close_march=False)
    old, _ = _month_of_instances(Unpacked, 900, seed=1, close_march=False)
    # Only what can still change stays a Metered: not deleted, or a late report pending.
    assert all(not m.deleted or m.billed_as is not None for m in meter.instances.values())
    assert any(m.deleted for m in meter.instances.values())
    assert {k for k, m in old.instances.items() if not m.deleted or m.billed_as is not None} \
        == set(meter.instances)
    # Packed: the deleted ones billed in March (February is finalised), as they were.
    in_march = {k: m.intervals for k, m in old.instances.items()
                if m.deleted and m.billed_as is None
                and any(iv[1] >= MAR1 * US for iv in m.intervals)}
    assert {(u.account, u.name): u.intervals for u in meter.settled} == in_march
    assert len(in_march) > 150
    assert not {(account, name) for by_account in meter.touched.values()
                for account, names in by_account.items() for name in names} & in_march.keys()
    _close_due(meter, (APR1 + 3600) * US)
    assert not list(meter.settled)  # every period they billed in is finalised


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_packed_and_unpacked_meters_finalise_byte_identical_invoices(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settled, "SEGMENT", 64)  # many frozen segments, some cut at closes
    _, unpacked = _month_of_instances(Unpacked, 700, seed)
    _, packed = _month_of_instances(CellMeter, 700, seed)
    _, pickled = _month_of_instances(CellMeter, 700, seed, pickle_at=1500)
    assert [i.content_hash for i in packed] == [i.content_hash for i in unpacked]
    assert packed == unpacked == pickled
    assert sum(len(i.adjustments) for i in packed) > 0  # late reports were weighed
    assert {i.period for i in packed} == {"2026-02", "2026-03"}


def _held_bytes(kind: type[CellMeter], n: int) -> int:
    meter = _meter(kind)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            m = _new(meter, i)
            t = (FEB1 + 3 * 86_400) * US + i * 8_640_000
            meter.transition(m, "running", t, 2)
            meter.transition(m, "stopped", t + 600 * US + i % 1000, 3)
            meter.transition(m, "deleted", t + 601 * US, 4)
            meter.deleted(m)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_deleted_instance_costs_a_packed_row() -> None:
    n = 3 * settled.SEGMENT
    packed, unpacked = _held_bytes(CellMeter, n) / n, _held_bytes(Unpacked, n) / n
    assert packed < 100 < 400 < unpacked  # ~40 (plus the unfrozen rows) vs ~600


# --- the engine, on every store ---------------------------------------------------------------


RESTART = "restart"


def _deletes_around_a_month_end() -> list[tuple[dict[str, Any], ...] | str]:
    """Instances deleted in February, across its end and in March, one never billed, one
    deleted after a late report for February; restarts in between. Batches of commands,
    made once so that two runs record the very same events."""
    def running(name: str, t: float, account: str = b.ACCOUNT, vcpu: str = "0.5"
                ) -> tuple[dict[str, Any], ...]:
        return (b.create(name, t, account, vcpu=vcpu),
                b.report("ReportInstanceRunning", t, instance_id=name, account=account))

    script: list[tuple[dict[str, Any], ...] | str] = [
        (b.price_book(-DAY, **RATES), b.networks(t=-DAY), b.networks("globex", t=-DAY),
         b.pool(t=-DAY, min_nodes=1, kind="shared", node_models=[BIG_NODE]),
         b.report("ReportNodeReady", -DAY + 1, node_id="general-00001"), b.tick(-3600)),
        *[running(name, -300 + k, vcpu="0.50" if name == "b" else "0.5")
          for k, name in enumerate(["a", "b", "c", "late"])],
        (b.create("never", -200, account="globex"), b.tenant("DeleteInstance", "a", -100),
         b.tenant("DeleteInstance", "never", -90, "globex")), RESTART,
        (b.tenant("DeleteInstance", "b", 50),), RESTART,
        (b.tick(3600),),  # February finalised: b and late billed to its end
        (b.report("ReportInstanceTerminated", -20, instance_id="late", reason="late"),),
        (b.tenant("DeleteInstance", "late", 3700),), RESTART]  # its adjustment pending
    for k in range(6):
        account = "globex" if k % 2 else b.ACCOUNT
        script += [running(f"m{k}", 4000 + k * 10, account),
                   (b.tenant("DeleteInstance", f"m{k}", 4000 + k * 10 + 7.25, account),)]
        if k % 3 == 0:
            script.append(RESTART)
    return [*script, (b.tick(APRIL - 3600),),  # the ticker keeps the cell's clock
            (b.tenant("DeleteInstance", "c", APRIL - 0.5),),
            (b.tick(APRIL + 3600),)]  # March finalised, with late's credit for February


def _play(engine: Engine, script: list[tuple[dict[str, Any], ...] | str], restarts: bool
          ) -> list[tuple[str, int, bytes]]:
    """Run the script (a restart: a snapshot, eviction, then a start from the snapshot);
    answers the invoice events recorded."""
    for step in script:
        if isinstance(step, str):
            if restarts:
                engine.processor.save_snapshots()
                engine.processor.world.evict(b.CELL)
                engine.processor.forget()
        else:
            accepted(engine, *step)
    rows = engine.app.recorder.select_notifications(start=1, limit=10**9)
    return [(n.topic, n.originator_version, n.state) for n in rows if "Invoice" in n.topic]


def test_on_every_store_deletes_bill_as_the_unpacked_meter(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settled, "SEGMENT", 2)  # frozen segments in the snapshots
    script = _deletes_around_a_month_end()
    with connect(store_url) as engine:
        packed = _play(engine, script, restarts=True)
        meter = engine.processor.world.billing.cells[b.CELL]
        assert not meter.instances.keys() & {(b.ACCOUNT, n) for n in ("a", "b", "c", "late")}
        assert not list(meter.settled)  # every period they billed in is finalised
    monkeypatch.setattr(CellMeter, "deleted", Unpacked.deleted)
    with connect("memory://") as engine:
        unpacked = _play(engine, script, restarts=False)
        meter = engine.processor.world.billing.cells[b.CELL]
        assert (b.ACCOUNT, "c") in meter.instances  # (the old way: kept whole)
    assert packed == unpacked
    finalised = [json.loads(state) for topic, _, state in packed if "Finalized" in topic]
    assert [(i["period"], i["account"], len(i["lines"]), len(i["adjustments"]))
            for i in finalised] == [("2026-02", "acme", 4, 0), ("2026-03", "acme", 5, 1),
                                    ("2026-03", "globex", 3, 0)]
