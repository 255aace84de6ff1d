"""Findings 05 and 06: the Kubernetes driver runs a tenant's Pod only in a namespace cis
made for that account, and a Pod the API server refuses for good is not retried: the
worker dead-letters it at once and reports the instance terminated, so the queue behind it
moves on and the instance fails unbilled. The API server is the official client's real
HTTP requests captured below urllib3 (as in test_driver_kubernetes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from adapters.bootstrap import Engine
from adapters.driver_ledger import Ledger
from adapters.driver_reports import refused_run
from adapters.driver_worker import DriverWorker, PodHandler, WorkerConfig
from adapters.drivers.kubernetes import KubernetesPodDriver
from adapters.infra_commands import commands_in
from adapters.kafka_io import DLQ_REASON_HEADER, Publisher
from adapters.ports import DriverRefused
from schemas.commands import command_adapter
from schemas.infra import RunPod
from simulations.tansu import Broker
from tests import builders as b
from tests import driver_fixtures as f
from tests.helpers import cell_with_ready_node, domain_snapshot, instance, one
from tests.test_driver_kubernetes import Pool, Response, validate
from tests.test_driver_worker import read_all, send, step_until

MakeTopic = Callable[..., str]
NOT_FOUND = Response(404, {"kind": "Status", "reason": "NotFound"})
CONFLICT = Response(409, {"kind": "Status", "reason": "AlreadyExists"})
INVALID = ('Pod "bad" is invalid: spec.containers[0].image: Invalid value: " nginx ": '
           "must not have leading or trailing whitespace")


def _driver(pool: Pool) -> KubernetesPodDriver:
    api = client.ApiClient(client.Configuration(host="http://k8s.invalid"))
    api.rest_client.pool_manager = pool
    return KubernetesPodDriver(client.CoreV1Api(api))


def _namespace(name: str, labels: dict[str, str]) -> Response:
    return Response(200, {"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": name, "labels": labels}})


def _calls(pool: Pool) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _, _ in pool.requests]


def test_a_namespace_cis_did_not_make_gets_no_tenant_pod() -> None:
    pool = Pool()
    pool.answers.extend([CONFLICT, _namespace("monitoring", {"team": "sre"})])
    with pytest.raises(DriverRefused, match="namespace monitoring exists") as refused:
        _driver(pool).run(f.run_pod("web-1", "general-00001", account="monitoring"))
    assert refused.value.code == "namespace_not_owned"
    assert _calls(pool) == [("POST", "/api/v1/namespaces"),
                            ("GET", "/api/v1/namespaces/monitoring")], "no Pod posted"


def test_a_namespace_made_for_another_account_is_not_owned() -> None:
    pool = Pool()
    pool.answers.extend([CONFLICT, _namespace("acme", {"cis.io/account": "globex"})])
    with pytest.raises(DriverRefused, match="namespace_not_owned"):
        _driver(pool).run(f.run_pod("web-1", "general-00001"))


def test_an_accounts_namespace_is_made_labelled_or_checked_once() -> None:
    pool, made = Pool(), Pool()
    pool.answers.extend([CONFLICT, _namespace("acme", {"cis.io/account": "acme"})])
    driver = _driver(pool)
    driver.run(f.run_pod("web-1", "general-00001"))
    driver.run(f.run_pod("web-2", "general-00001"))
    assert _calls(pool) == [("POST", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/acme"),
                            ("POST", "/api/v1/namespaces/acme/pods"),
                            ("POST", "/api/v1/namespaces/acme/pods")]
    _driver(made).run(f.run_pod("web-1", "general-00001", account="globex"))
    body = made.requests[0][3]
    assert body["metadata"] == {"name": "globex", "labels": {"cis.io/account": "globex"}}
    validate(body)
    assert _calls(made)[1:] == [("POST", "/api/v1/namespaces/globex/pods")]


def test_a_namespace_deleted_under_the_driver_is_made_again() -> None:
    pool = Pool()
    driver = _driver(pool)
    driver.run(f.run_pod("web-1", "general-00001"))
    pool.requests.clear()
    pool.answers.extend([NOT_FOUND, Response(201, {}), Response(201, {})])
    driver.run(f.run_pod("web-2", "general-00001"))
    assert _calls(pool) == [("POST", "/api/v1/namespaces/acme/pods"),
                            ("POST", "/api/v1/namespaces"),
                            ("POST", "/api/v1/namespaces/acme/pods")]


@pytest.mark.parametrize("status,code", [(400, "pod_invalid"), (422, "pod_invalid")])
def test_a_pod_the_api_server_refuses_is_refused_for_good(status: int, code: str) -> None:
    pool = Pool()
    pool.answers.extend([Response(201, {}), Response(status, {
        "kind": "Status", "status": "Failure", "message": INVALID, "code": status})])
    with pytest.raises(DriverRefused) as refused:
        _driver(pool).run(f.run_pod("bad", "general-00001"))
    assert refused.value.code == code
    assert str(refused.value) == f"{code}: {status} {INVALID}"


POD_SECURITY = ('pods "bad" is forbidden: violates PodSecurity "restricted:latest": '
                'privileged (container "c" must not set securityContext.privileged=true)')
QUOTA = 'pods "web-1" is forbidden: exceeded quota: compute, requested: cpu=2, limited: cpu=1'


def test_only_pod_security_makes_a_403_permanent() -> None:
    pool = Pool()
    pool.answers.extend([Response(201, {}), Response(403, {
        "kind": "Status", "status": "Failure", "message": POD_SECURITY, "code": 403})])
    with pytest.raises(DriverRefused) as refused:
        _driver(pool).run(f.run_pod("bad", "general-00001"))
    assert refused.value.code == "forbidden"
    # A quota, a namespace being terminated, RBAC glitches: retried, they clear up.
    pool = Pool()
    pool.answers.extend([Response(201, {}), Response(403, {
        "kind": "Status", "status": "Failure", "message": QUOTA, "code": 403})])
    with pytest.raises(ApiException) as failed:
        _driver(pool).run(f.run_pod("web-1", "general-00001"))
    assert not isinstance(failed.value, DriverRefused) and failed.value.status == 403


def test_a_driver_that_may_not_create_namespaces_reads_the_operators() -> None:
    pool = Pool()
    pool.answers.extend([
        Response(403, {"kind": "Status", "message": "namespaces is forbidden", "code": 403}),
        Response(200, {"kind": "Namespace", "metadata": {
            "name": "acme", "labels": {"cis.io/account": "acme"}}}),
        Response(201, {})])
    _driver(pool).run(f.run_pod("web-1", "general-00001"))
    assert _calls(pool) == [("POST", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/acme"),
                            ("POST", "/api/v1/namespaces/acme/pods")]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_load_and_outages_are_still_retried(status: int) -> None:
    pool = Pool()
    pool.answers.extend([Response(201, {}), Response(status, {"kind": "Status"})])
    with pytest.raises(ApiException) as failed:
        _driver(pool).run(f.run_pod("web-1", "general-00001"))
    assert not isinstance(failed.value, DriverRefused) and failed.value.status == status


class ApiServer(Pool):
    """Answers by route: the Pod named `bad` is invalid, every other call succeeds."""

    def request(self, method: str, url: str, body: Any = None, **kwargs: Any) -> Response:
        super().request(method, url, body, **kwargs)
        if method == "POST" and url.endswith("/pods") and json.loads(body)[
                "metadata"]["name"] == "bad":
            return Response(422, {"kind": "Status", "message": INVALID, "code": 422})
        if method == "GET":  # the watch's first list
            return Response(200, {"items": [], "metadata": {"resourceVersion": "1"}})
        return Response(201, json.loads(body) if body else {})


def test_the_worker_dead_letters_a_refused_pod_at_once_and_reports_it(
        kafka_broker: Broker, kafka_topic_factory: MakeTopic, tmp_path: Path) -> None:
    topics = {"topic": kafka_topic_factory("pod", partitions=1),
              "reports_topic": kafka_topic_factory("reports", partitions=1),
              "dlq_topic": kafka_topic_factory("dlq", partitions=1)}
    bad, good = f.run_pod("bad", "general-00001"), f.run_pod("web-1", "general-00001")
    with Publisher(kafka_broker.bootstrap, client_id="test-driver") as publisher:
        send(publisher, topics["topic"], bad, good)
    ledger = Ledger(tmp_path / "ledger.db")
    w = DriverWorker(PodHandler(_driver(ApiServer())), ledger, WorkerConfig(
        kafka=kafka_broker.bootstrap, poll_timeout_ms=200, backoff_s=0.0,
        client_id="test-driver", **topics))
    step_until(w, lambda: w.counters.done + w.counters.dead == 2)
    w.reset()
    assert (w.counters.done, w.counters.dead, w.counters.retries) == (1, 1, 0)
    assert ledger.commands("dead") == [bad.command_id]
    [dead] = read_all(kafka_broker, topics["dlq_topic"], 1)
    assert dict(dead.headers)[DLQ_REASON_HEADER].decode().startswith(
        "refused: DriverRefused: pod_invalid: 422 Pod \"bad\" is invalid")
    [record] = read_all(kafka_broker, topics["reports_topic"], 1)
    report = command_adapter.validate_json(record.value)
    assert report == refused_run(bad, DriverRefused("pod_invalid", f"422 {INVALID}"))
    assert (report.type, report.instance_id, report.occurred_at) == (
        "ReportInstanceTerminated", "bad", bad.at)


def test_the_engine_fails_a_refused_pods_instance_unbilled(engine: Engine) -> None:
    cell_with_ready_node(engine)
    assert one(engine, b.create("x")).status == "accepted"
    (run,) = [c for c in commands_in(engine.app) if isinstance(c, RunPod)]
    report = refused_run(run, DriverRefused("namespace_not_owned", "namespace acme exists\n"
                                            "and cis did not make it")).model_dump_json()
    out = one(engine, report)
    assert out.status == "accepted", out.reasons
    x = instance(engine, "x")
    assert x.state == "failed"
    assert engine.processor.world.billing.cells[b.CELL].instances[
        (b.ACCOUNT, "x")].intervals == [], "never began: nothing billed"
    before = domain_snapshot(engine)
    again = one(engine, report)  # a worker restarted before the dead mark sends it again
    assert again == out and domain_snapshot(engine) == before, "the same report, no change"
