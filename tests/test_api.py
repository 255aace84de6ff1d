"""The HTTP query API on a real server (uvicorn on a loopback port), on each SQL store."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import uvicorn

from adapters import queries, tokens
from adapters.api import create_app
from adapters.bootstrap import connect
from simulations import workloads
from tests.helpers import simulate

pytestmark = pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def api(store_url: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store_url), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def operator(store_url: str) -> str:
    with connect(store_url) as engine:
        return tokens.create(engine.view, None)[1]


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/problem+json"
        return error.code, json.loads(error.read())


def decimals_as_text(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def test_answers_are_the_queries_at_the_projected_position(store_url: str, api: str,
                                                           operator: str) -> None:
    with connect(store_url) as engine:
        harness = simulate(engine, 30, seed=5, hours=10)
        engine.update_projections()
        projected_to = engine.app.recorder.max_notification_id()
        newest = queries.newest_event_time(engine)
        usage = queries.usage(engine, "acme", newest)
        invoices = queries.invoices(engine, "acme", None, newest)
        rows = queries.instances(engine, "acme")
        # More happens after the projections stopped following: answers stay at their point.
        harness.run(until=workloads.DAY_START + timedelta(hours=20))
        assert (engine.app.recorder.max_notification_id() or 0) > projected_to
        assert queries.usage(engine, "acme", queries.newest_event_time(engine)) != usage
    status, health = get(f"{api}/v1/health")
    assert status == 200 and health["projected"]["position"] == projected_to

    status, got = get(f"{api}/v1/accounts/acme/usage", operator)
    assert status == 200
    assert got["projected"]["position"] == projected_to
    assert {k: got[k] for k in ("account", "as_of", "instances", "totals")} == usage
    assert usage["instances"] and any(line["billed_seconds"] for line in usage["instances"])

    status, got = get(f"{api}/v1/accounts/acme/invoices", operator)
    assert status == 200 and got["invoices"] == decimals_as_text(invoices["invoices"])
    status, got = get(f"{api}/v1/accounts/acme/instances", operator)
    assert status == 200
    assert {r["instance_id"] for r in got["instances"]} == {r["instance_id"] for r in rows}

    status, got = get(f"{api}/v1/accounts/acme/invoices/explain?line=1", operator)
    assert status == 200 and got["lines"] and got["lines"][0]["intervals"]
    assert got["lines"][0]["intervals"][0]["opened_by"].startswith("instance/")


def test_bad_queries_get_every_reason(store_url: str, api: str, operator: str) -> None:
    status, got = get(f"{api}/v1/accounts/acme/invoices?period=2026-13&as_of=2026-01-01T00:00",
                      operator)
    assert status == 422 and got["status"] == 422
    assert {tuple(d["loc"]) for d in got["errors"]} == {("query", "period"), ("query", "as_of")}
    status, got = get(f"{api}/v1/accounts/Not_An_Account/usage", operator)
    assert status == 422 and got["errors"][0]["loc"] == ["path", "account"]
    status, got = get(f"{api}/v1/accounts/acme/invoices/explain", operator)
    assert status == 422 and got["errors"][0]["loc"] == ["query", "line"]


def test_the_contract_is_published(store_url: str, api: str) -> None:
    status, spec = get(f"{api}/openapi.json")
    assert status == 200
    assert set(spec["paths"]) == {
        "/v1/health", "/v1/accounts/{account}/instances", "/v1/accounts/{account}/usage",
        "/v1/accounts/{account}/invoices", "/v1/accounts/{account}/invoices/explain",
        "/v1/nodes"}
    assert {"UsageReport", "InvoicesReport", "ExplainReport"} <= set(
        spec["components"]["schemas"])
