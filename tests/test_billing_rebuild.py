"""Invariant 1 for money: replaying the log rebuilds every invoice byte for byte, on every
store, and the projection agrees with what the engine recorded."""

from __future__ import annotations

from datetime import timedelta

from adapters import queries
from adapters.bootstrap import Engine
from engine.domain.invoice import Invoice
from projections.invoices import BILLING_PERIODS, INVOICE_ADJUSTMENTS, INVOICE_LINES, INVOICES
from projections.usage import USAGE
from tests import builders as b
from tests.helpers import accepted, one
from tests.test_billing_engine import APRIL, DAY, cell, running

TABLES = (INVOICES, INVOICE_LINES, INVOICE_ADJUSTMENTS, BILLING_PERIODS, USAGE)


def _history(engine: Engine) -> None:
    cell(engine, book={"min_seconds": 60})
    change = b.price_book(-DAY, rate_per_vcpu_second="0.013", rate_per_gib_second="0.0017")
    change["effective_from"] = b.at(-50)
    accepted(engine, change)
    running(engine, "a", -300.25)
    running(engine, "b", -20.5, account="globex")
    running(engine, "c", -5)
    accepted(engine, b.tenant("StopInstance", "c", -1.5))
    one(engine, b.tick(3600))  # February finalised: a and b still running
    one(engine, b.report("ReportInstanceTerminated", -10.75, instance_id="a", reason="late"))
    accepted(engine, b.tenant("StopInstance", "b", 100, account="globex"))
    one(engine, b.tick(APRIL + 3600))  # March: b's line and a's credit


def _invoices(engine: Engine) -> dict[tuple[str, str], dict]:
    out = {}
    for account in ("acme", "globex"):
        report = queries.invoices(engine, account, as_of=b.T0 + timedelta(days=40))
        for inv in report["invoices"]:
            out[(account, inv["period"])] = inv
    return out


def test_rebuild_reproduces_every_invoice_byte_for_byte(engine: Engine) -> None:
    _history(engine)
    engine.update_projections()
    rows = {t.name: engine.view.select(t) for t in TABLES}
    before = _invoices(engine)
    recorded = {(e.account, e.period): e.content_hash for _, e in engine.app.read()
                if isinstance(e, Invoice.InvoiceFinalized)}
    assert set(recorded) == {("acme", "2026-02"), ("globex", "2026-02"), ("acme", "2026-03"),
                             ("globex", "2026-03")}
    assert {k: v["content_hash"] for k, v in before.items()} == recorded
    assert all(v["hash_verified"] for v in before.values())
    assert before[("acme", "2026-03")]["adjustments"]
    engine.rebuild_projections()
    assert {t.name: engine.view.select(t) for t in TABLES} == rows
    assert _invoices(engine) == before
