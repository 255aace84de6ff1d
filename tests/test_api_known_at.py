"""`known_at` and `known_position` on the HTTP query API (docs/design.md §1.3): an answer
given before a late report comes back as it was, on each SQL store."""

from __future__ import annotations

import pytest

from adapters import queries
from adapters.bootstrap import connect
from tests import builders as b
from tests.helpers import one
from tests.test_api import api, decimals_as_text, get, operator  # noqa: F401 (fixtures)
from tests.test_billing_engine import cell, running


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_api_known_at_and_known_position(store_url: str, api: str, operator: str) -> None:
    with connect(store_url) as engine:
        cell(engine, book={"min_seconds": 60})
        running(engine, "a", -300.25)
        one(engine, b.tick(3600))
        engine.update_projections()
        before = {"usage": queries.usage(engine, "acme"),
                  "invoices": queries.invoices(engine, "acme")}
        position = engine.app.recorder.max_notification_id()
        one(engine, b.report("ReportInstanceTerminated", -10.75, instance_id="a",
                             reason="late"))
        engine.update_projections()
    base = f"{api}/v1/accounts/acme"
    status, now = get(f"{base}/invoices", operator)
    assert status == 200 and now["invoices"][-1]["adjustments"]  # pending, known now
    status, then = get(f"{base}/invoices?known_position={position}", operator)
    assert status == 200
    assert then["invoices"] == decimals_as_text(before["invoices"]["invoices"])
    assert then["as_of"] == before["invoices"]["as_of"]
    status, then = get(f"{base}/usage?known_position={position}", operator)
    assert status == 200 and then["totals"] == decimals_as_text(before["usage"]["totals"])
    status, early = get(f"{base}/instances?known_at=2026-02-01T00:00:00Z", operator)
    assert status == 200 and early["instances"] == []
    status, explained = get(f"{base}/invoices/explain?line=a&known_position={position}",
                            operator)
    assert status == 200 and [e["kind"] for e in explained["lines"]] == ["line", "line"]
    status, problem = get(f"{base}/usage?known_at=1900-01-01T00:00:00Z", operator)
    assert status == 422 and problem["errors"][0]["loc"] == ["query", "known_at"]
    status, problem = get(f"{base}/usage?known_at=2026-02-01T00:00:00Z&known_position=1",
                          operator)  # which one? not silently the position
    assert status == 422 and problem["errors"][0]["loc"] == ["query", "known_position"]
