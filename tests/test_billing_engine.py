"""Billing through the engine (docs/design.md §3.3–§3.4): the cases an auditor asks about first.

Times are seconds after builders.T0 = 2026-03-01 00:00 UTC, a month boundary: negative
times are February. The price: 0.5 vCPU / 1 GiB at 0.01 + 0.001 = 0.006 per second.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters import queries
from adapters.bootstrap import Engine
from tests import builders as b
from tests.helpers import accepted, one, run

D = Decimal
DAY = 86_400
APRIL = 31 * DAY  # 2026-04-01 00:00, in seconds after T0
BIG_NODE = {"name": "8C16G", "millicores": 8000, "memory_mib": 16384}
RATES = {"rate_per_vcpu_second": "0.01", "rate_per_gib_second": "0.001"}

pytestmark = pytest.mark.parametrize("store_url", ["memory"], indirect=True)


def cell(engine: Engine, *, book: dict[str, Any] | None = None, **pool: Any) -> None:
    """A price book in force since a day before T0 and a pool with one ready node (by
    default a big shared one); the ticker has kept the cell's clock until just before T0."""
    publish = b.price_book(-DAY, **{**RATES, **(book or {})})
    pool = {"kind": "shared", "node_models": [BIG_NODE], **pool}
    accepted(engine, publish, b.networks(t=-DAY), b.networks("globex", t=-DAY),
             b.pool(t=-DAY, min_nodes=1, **pool),
             b.report("ReportNodeReady", -DAY + 1, node_id="general-00001"), b.tick(-3600))


def running(engine: Engine, name: str, t: float, **create: Any) -> None:
    accepted(engine, b.create(name, t, **create),
             b.report("ReportInstanceRunning", t, instance_id=name,
                      account=create.get("account", b.ACCOUNT)))


def invoices(engine: Engine, as_of: float, account: str = "acme") -> dict[str, dict]:
    engine.update_projections()
    report = queries.invoices(engine, account, as_of=b.T0 + timedelta(seconds=as_of))
    return {i["period"]: i for i in report["invoices"]}


def summary(invoice: dict) -> list[tuple[str, int, int, int, str]]:
    return [(x["instance_id"], x["price_version"], x["seconds"], x["topup_seconds"],
             x["amount"]) for x in invoice["lines"]]


def test_run_across_month_end_is_split_exactly(engine: Engine) -> None:
    cell(engine)
    accepted(engine, b.create("x", -10.5), b.report("ReportInstanceStarting", -10.2,
                                                     instance_id="x"),
             b.report("ReportInstanceRunning", -10, instance_id="x"),
             b.tenant("StopInstance", "x", 20.3))
    found = invoices(engine, 30)
    # Seconds -11..-1 in February (11), 0..20 in March (21); 0.006 each.
    assert summary(found["2026-02"]) == [("x", 1, 11, 0, "0.07")]  # 0.066
    assert summary(found["2026-03"]) == [("x", 1, 21, 0, "0.13")]  # 0.126
    assert {i["status"] for i in found.values()} == {"open"}


def test_price_change_mid_run_gives_one_line_per_version(engine: Engine) -> None:
    cell(engine)
    change = b.price_book(-DAY, rate_per_vcpu_second="0.02", rate_per_gib_second="0.002")
    change["effective_from"] = b.at(100)
    accepted(engine, change)
    running(engine, "x", 50.5)
    accepted(engine, b.tenant("StopInstance", "x", 150.5))
    assert summary(invoices(engine, 200)["2026-03"]) == [
        ("x", 1, 50, 0, "0.30"),  # 50..99 at 0.006
        ("x", 2, 51, 0, "0.61"),  # 100..150 at 0.012 = 0.612
    ]


def test_restart_storm_inside_one_second_bills_it_once(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", 10.01, policy="Always", retry_budget={"restarts": 100})
    storm = []
    for k in range(40):
        storm += [b.report("ReportContainerExited", 10.02 + k * 0.02, instance_id="x",
                           container="c0", exit_code=1),
                  b.report("ReportInstanceRunning", 10.03 + k * 0.02, instance_id="x")]
    accepted(engine, *storm, b.tenant("StopInstance", "x", 10.99))
    assert summary(invoices(engine, 20)["2026-03"]) == [("x", 1, 1, 0, "0.01")]
    engine.update_projections()
    assert queries.usage(engine, "acme")["instances"][0]["billed_seconds"] == 1


def test_instances_that_never_start_bill_nothing(engine: Engine) -> None:
    cell(engine)
    accepted(engine, b.create("scheduled-only", 1),
             b.tenant("StopInstance", "scheduled-only", 50))
    accepted(engine, b.create("deleted", 2), b.tenant("DeleteInstance", "deleted", 60))
    one(engine, b.tick(APRIL + 3600))
    assert invoices(engine, APRIL + 3600) == {}
    engine.update_projections()
    assert all(r["billed_seconds"] == 0 for r in queries.usage(engine, "acme")["instances"])


def test_stuck_pending_then_expired_bills_nothing(engine: Engine) -> None:
    cell(engine, kind="dedicated", node_models=b.MODELS, max_nodes=1)
    running(engine, "a", 1)  # the only node is now taken
    accepted(engine, b.create("waits", 2))
    outcome = one(engine, b.tick(2000))
    assert "expired 1" in (outcome.note or "")
    accepted(engine, b.tenant("StopInstance", "a", 3000))
    lines = summary(invoices(engine, 4000)["2026-03"])
    assert [x[0] for x in lines] == ["a"]


def test_node_loss_stops_billing_at_the_loss(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", 5)
    accepted(engine, b.report("ReportNodeLost", 65.5, node_id="general-00001",
                              reason="hypervisor"))
    run(engine, b.report("ReportInstanceRunning", 90, instance_id="x"))  # stale: no-op
    assert summary(invoices(engine, 1000)["2026-03"]) == [("x", 1, 61, 0, "0.37")]


def test_minimum_seconds_top_up_a_short_run(engine: Engine) -> None:
    cell(engine, book={"min_seconds": 60})
    running(engine, "short", 5)
    running(engine, "long", 5)
    accepted(engine, b.tenant("StopInstance", "short", 15),
             b.tenant("StopInstance", "long", 100))
    assert summary(invoices(engine, 200)["2026-03"]) == [
        ("long", 1, 95, 0, "0.57"), ("short", 1, 10, 50, "0.36")]


def test_spec_is_rounded_up_and_both_are_shown(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", 1, vcpu="0.3", memory_gib="0.7")
    accepted(engine, b.tenant("StopInstance", "x", 11))
    (line,) = invoices(engine, 20)["2026-03"]["lines"]
    assert (line["requested"], line["billed_spec"]) == ("0.3 vCPU / 0.7 GiB",
                                                        "0.5 vCPU / 1 GiB")
    too_big = one(engine, b.create("y", 30, vcpu="3", memory_gib="4"))
    assert too_big.status == "rejected"
    assert any("catalogue" in r.problem for r in too_big.reasons)


def test_amounts_round_half_up_at_the_minor_unit(engine: Engine) -> None:
    # 1 vCPU / 2 GiB at 0.0025 + 0 = 0.0025 per second: 2 s = 0.005 exactly, a tie.
    cell(engine, book={"rate_per_vcpu_second": "0.0025", "rate_per_gib_second": "0"})
    running(engine, "tie", 1, vcpu="1", memory_gib="2")
    running(engine, "below", 1, vcpu="1", memory_gib="2")
    accepted(engine, b.tenant("StopInstance", "tie", 3), b.tenant("StopInstance", "below", 2))
    lines = {x[0]: x[4] for x in summary(invoices(engine, 10)["2026-03"])}
    assert lines == {"tie": "0.01", "below": "0.00"}  # half-up, not half-even


def test_kata_runtime_rates_replace_the_base_rates(engine: Engine) -> None:
    kata = {"kata": {"rate_per_vcpu_second": "0.1", "rate_per_gib_second": "0.01"}}
    cell(engine, book={"runtime_rates": kata})
    running(engine, "k", 1, runtime="kata")
    accepted(engine, b.tenant("StopInstance", "k", 11))
    (line,) = invoices(engine, 20)["2026-03"]["lines"]
    assert (line["price_per_second"], line["amount"]) == ("0.06", "0.60")


# --- finalisation and late reports ------------------------------------------------------------


def test_period_is_finalised_by_the_tick_past_end_plus_grace(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", -100)
    assert one(engine, b.tick(3599)).events == []
    outcome = one(engine, b.tick(3600))
    assert outcome.events[0] == "invoice/acme/2026-02#1"
    found = invoices(engine, 3600)
    feb = found["2026-02"]
    assert feb["status"] == "finalised" and feb["hash_verified"]
    assert summary(feb) == [("x", 1, 100, 0, "0.60")]  # still running: billed to the end
    assert found["2026-03"]["status"] == "open"  # accrues on


def test_late_stop_after_finalisation_becomes_a_credit_on_the_next_invoice(
        engine: Engine) -> None:
    cell(engine)
    running(engine, "x", -100)
    one(engine, b.tick(3600))
    feb_before = invoices(engine, 3600)["2026-02"]
    # Processed after February was finalised, speaking of 40 s before its end.
    late = one(engine, b.report("ReportInstanceTerminated", -40, instance_id="x",
                                reason="OOMKilled"))
    (late_event,) = late.events
    pending = invoices(engine, 7200)["2026-03"]
    assert pending["status"] == "open" and pending["lines"] == []
    assert [(a["period"], a["amount"]) for a in pending["adjustments"]] == [("2026-02", "-0.24")]
    one(engine, b.tick(APRIL + 3600))
    found = invoices(engine, APRIL + 3600)
    assert found["2026-02"] == feb_before  # a finalised invoice never changes
    march = found["2026-03"]
    assert march["status"] == "finalised" and march["total"] == "-0.24"
    (credit,) = march["adjustments"]
    assert (credit["billed_before"], credit["recomputed"], credit["corrects"]) == (
        "0.60", "0.36", [late_event])
    assert "2026-04" not in found  # nothing left to adjust


def test_late_run_in_a_finalised_period_becomes_a_debit(engine: Engine) -> None:
    cell(engine, scheduled_timeout_seconds=86_400)  # x must outlive the tick unreported
    accepted(engine, b.create("x", -30))
    one(engine, b.tick(3600))  # February closes with nothing to bill: x never reported
    # The infrastructure's reports arrive late (a tenant's own time can't be in the past).
    accepted(engine, b.report("ReportInstanceRunning", -20, instance_id="x"),
             b.report("ReportInstanceTerminated", -10, instance_id="x", reason="Evicted"))
    one(engine, b.tick(APRIL + 3600))
    march = invoices(engine, APRIL + 3600)["2026-03"]
    (debit,) = march["adjustments"]
    assert (debit["period"], debit["amount"], debit["billed_before"]) == ("2026-02", "0.06", "0")
    assert len(debit["corrects"]) == 2  # the late start and the late stop


def test_finalisation_survives_a_restart_of_the_writer(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", -100)
    one(engine, b.tick(3600))
    one(engine, b.report("ReportInstanceTerminated", -40, instance_id="x", reason="Evicted"))
    engine.processor.forget()  # the meter is rebuilt from the log, late marks included
    assert one(engine, b.tick(3600 + 1)).events == []  # February is not finalised twice
    one(engine, b.tick(APRIL + 3600))
    (credit,) = invoices(engine, APRIL + 3600)["2026-03"]["adjustments"]
    assert credit["amount"] == "-0.24"


def test_default_as_of_is_the_newest_event_never_the_wall_clock(engine: Engine) -> None:
    cell(engine)
    running(engine, "x", 0)
    accepted(engine, b.tick(50))  # the ticker's time (a stale report would not move it)
    engine.update_projections()
    report = queries.invoices(engine, "acme")
    assert report["as_of"] == b.at(50).replace("+00:00", "Z")
    assert summary(report["invoices"][0]) == [("x", 1, 50, 0, "0.30")]
