"""The query API's trust boundary on a real server, on each SQL store: bearer tokens, problem
answers, pages, cost bounds, no global lock, metrics."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters import queries, tokens
from adapters.api import QUERY_THREADS
from adapters.bootstrap import connect
from tests.helpers import simulate
from tests.test_api import api, get, operator  # noqa: F401 (fixtures)

pytestmark = pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def filled(store_url: str) -> str:
    with connect(store_url) as engine:
        simulate(engine, 30, seed=5, hours=10)
        engine.update_projections()
    return store_url


def token(store_url: str, account: str | None, **kw: Any) -> str:
    with connect(store_url) as engine:
        return tokens.create(engine.view, account, **kw)[1]


def test_every_account_route_needs_a_token_for_that_account(filled: str, api: str,
                                                           operator: str) -> None:
    acme = token(filled, "acme")
    other = token(filled, "globex")
    expired = token(filled, "acme", expires_at=datetime.now(UTC) + timedelta(seconds=-1))
    revoked = token(filled, "acme")
    with connect(filled) as engine:
        tokens.revoke(engine.view, revoked.split(".")[1])
    routes = ["instances", "usage", "invoices", "invoices/explain?line=1"]
    for route in routes:
        url = f"{api}/v1/accounts/acme/{route}"
        for bad in (None, "nonsense", acme[:-1] + ("A" if acme[-1] != "A" else "B"),
                    expired, revoked):
            status, got = get(url, bad)
            assert status == 401 and got["status"] == 401 and got["title"] == "Unauthorized"
        status, got = get(url, other)
        assert status == 403 and got["detail"] == "the token is for another account"
        assert get(url, acme)[0] == 200 and get(url, operator)[0] == 200
    # Health stays open: the log position only.
    # Without a valid token nothing else is looked at: not even a bad query.
    status, _ = get(f"{api}/v1/accounts/acme/invoices?as_of=never&period=13&limit=0")
    assert status == 401
    status, _ = get(f"{api}/v1/accounts/acme/invoices?as_of=never", other)
    assert status == 403
    status, got = get(f"{api}/v1/health")
    assert status == 200 and set(got) == {"status", "projected"}
    status, got = get(f"{api}/v1/nowhere")  # get() checks every error is problem+json
    assert status == 404 and got["title"] == "Not Found"


def test_as_of_outside_the_window_or_far_ahead_is_a_422(filled: str, api: str,
                                                        operator: str) -> None:
    for route in ("usage", "invoices", "invoices/explain?line=1&"):
        sep = "" if route.endswith("&") else "?"
        for as_of in ("2199-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2099-12-31T00:00:00Z"):
            status, got = get(f"{api}/v1/accounts/acme/{route}{sep}as_of={as_of}", operator)
            assert status == 422, (route, as_of)
            assert got["errors"][0]["loc"] == ["query", "as_of"]
    status, got = get(f"{api}/v1/accounts/acme/invoices?as_of=2199-01-01T00:00:00Z", operator)
    assert "outside the supported window" in got["detail"]
    status, got = get(f"{api}/v1/accounts/acme/invoices?as_of=2099-12-31T00:00:00Z", operator)
    assert "QUERY_AS_OF_AHEAD" in got["detail"]


def test_lists_are_paged_by_an_opaque_cursor(filled: str, api: str, operator: str) -> None:
    status, whole = get(f"{api}/v1/accounts/acme/instances?limit=1000", operator)
    assert status == 200 and whole["next"] is None and len(whole["instances"]) >= 3
    seen: list[str] = []
    cursor = ""
    while True:
        status, got = get(f"{api}/v1/accounts/acme/instances?limit=2{cursor}", operator)
        assert status == 200 and len(got["instances"]) <= 2
        seen += [i["id"] for i in got["instances"]]
        if got["next"] is None:
            break
        cursor = f"&cursor={got['next']}"
    assert seen == [i["id"] for i in whole["instances"]] == sorted(seen)
    status, usage = get(f"{api}/v1/accounts/acme/usage?limit=2", operator)
    assert status == 200 and len(usage["instances"]) == 2 and usage["next"]
    for bad in ("limit=0", "limit=1001", "cursor=bm90LWEtbGlzdA", "cursor=%24%24"):
        status, got = get(f"{api}/v1/accounts/acme/instances?{bad}", operator)
        assert status == 422, bad


def test_a_crash_is_a_500_problem_without_its_trace(
        filled: str, api: str, operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("secret internals")
    monkeypatch.setattr(queries, "instances", boom)
    status, got = get(f"{api}/v1/accounts/acme/instances", operator)
    assert status == 500 and got == {"type": "about:blank", "title": "Internal Server Error",
                                     "status": 500, "detail": "see the server log"}


def test_a_slow_query_blocks_neither_health_nor_other_readers_and_times_out(
        filled: str, api: str, operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = threading.Event(), threading.Event()
    real = queries.invoices

    def slow(*args: Any, **kw: Any) -> Any:
        entered.set()
        release.wait(30)
        return real(*args, **kw)
    monkeypatch.setattr(queries, "invoices", slow)
    monkeypatch.setattr(queries, "QUERY_TIMEOUT_S", 3.0)
    result: list[tuple[int, Any]] = []
    heavy = threading.Thread(target=lambda: result.append(
        get(f"{api}/v1/accounts/acme/invoices", operator)))
    heavy.start()
    assert entered.wait(10)
    # While the heavy query holds its snapshot, the others answer (a global lock would not).
    assert get(f"{api}/v1/health")[0] == 200
    assert get(f"{api}/v1/accounts/acme/instances", operator)[0] == 200
    heavy.join(20)
    release.set()
    (status, got), = result
    assert status == 503 and "QUERY_TIMEOUT_S" in got["detail"]


def test_abandoned_slow_queries_never_run_more_than_the_query_threads(
        filled: str, api: str, operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()
    real = queries.invoices

    def slow(*args: Any, **kw: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            release.wait(30)
            return real(*args, **kw)
        finally:
            with lock:
                running[0] -= 1
    monkeypatch.setattr(queries, "invoices", slow)
    monkeypatch.setattr(queries, "QUERY_TIMEOUT_S", 1.0)
    results: list[int] = []
    clients = [threading.Thread(target=lambda: results.append(
        get(f"{api}/v1/accounts/acme/invoices", operator)[0])) for _ in range(3 * QUERY_THREADS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    # Every client got its 503 at the limit; the abandoned threads stayed within their slots.
    assert results == [503] * len(clients)
    assert most[0] <= QUERY_THREADS
    release.set()


def test_metrics_count_requests_by_route_and_status(filled: str, api: str,
                                                    operator: str) -> None:
    get(f"{api}/v1/accounts/acme/instances", operator)
    get(f"{api}/v1/accounts/acme/instances")
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        text = response.read().decode()
    route = 'route="/v1/accounts/{account}/instances"'
    assert f'cis_api_request_seconds_count{{method="GET",{route},status="200"}}' in text
    assert f'cis_api_request_seconds_count{{method="GET",{route},status="401"}}' in text
    assert 'cis_api_requests_total{status="401"}' in text


def test_audit_queries_have_their_own_lane(filled: str, api: str, operator: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`known_at` folds the log on every call: a tenant asking many at once holds only the
    audit lane, never the threads everyone's plain queries answer on."""
    release = threading.Event()
    real = queries.known_at

    def slow(*args: Any, **kw: Any) -> Any:
        release.wait(30)
        return real(*args, **kw)
    monkeypatch.setattr(queries, "known_at", slow)
    audits: list[int] = []
    clients = [threading.Thread(target=lambda: audits.append(get(
        f"{api}/v1/accounts/acme/usage?known_position=1", operator)[0]))
        for _ in range(2 * QUERY_THREADS)]
    for client in clients:
        client.start()
    try:
        for _ in range(QUERY_THREADS + 1):
            assert get(f"{api}/v1/accounts/acme/usage", operator)[0] == 200
    finally:
        release.set()
        for client in clients:
            client.join(60)
    assert len(audits) == len(clients)


def test_made_up_methods_share_one_metrics_label(filled: str, api: str) -> None:
    """No token is needed to send a request: a label per invented method would let anyone
    grow the registry without bound."""
    for i in range(5):
        request = urllib.request.Request(f"{api}/v1/health", method=f"MADEUP{i}")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError:
            pass
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "MADEUP" not in text
    assert 'method="OTHER"' in text
