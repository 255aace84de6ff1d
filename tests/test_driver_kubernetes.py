"""The Kubernetes Pod driver without an API server: the official client's real HTTP requests
are captured below urllib3 and their bodies checked against the kubernetes-validate
schemas of every version from 1.25 it has; the status mapping is checked on Pod objects
shaped as the API returns them (themselves checked against the Pod schema)."""

from __future__ import annotations

import copy
import json
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import referencing
from kubernetes import client
from kubernetes_validate.utils import all_versions, major_minor, schema_contents

from adapters.driver_reports import pod_report
from adapters.drivers.kubernetes import KubernetesPodDriver, pod_facts
from adapters.ports import DriverError, PodDriver
from schemas.commands import command_adapter
from tests import driver_fixtures as f

VERSIONS = [v for v in all_versions() if major_minor(v) >= "1.25"]


def test_the_validator_has_the_versions_the_issue_names() -> None:
    assert {major_minor(v) for v in VERSIONS} >= {f"1.{m}" for m in range(25, 38)}


def validate(body: dict[str, Any]) -> None:
    for version in VERSIONS:
        if body["kind"] == "DeleteOptions":  # its schema is filed under meta/v1
            _validate_delete_options(body, version)
        else:
            kubernetes_validate.validate(body, version, strict=True)


def _validate_delete_options(body: dict[str, Any], version: str) -> None:
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{folder}/deleteoptions-meta-v1.json", version)
    definitions = schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(body)


class Response:
    """What urllib3 hands the client: status, headers, body (whole or streamed)."""

    def __init__(self, status: int, body: Any = None, lines: list[dict[str, Any]] | None = None
                 ) -> None:
        self.status = status
        self.reason = {200: "OK", 201: "Created", 404: "Not Found", 409: "Conflict"}.get(
            status, "Error")
        self.data = json.dumps(body if body is not None else {}).encode()
        self.headers = {"content-type": "application/json"}
        self._lines = lines or []

    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Any:
        for line in self._lines:
            yield (json.dumps(line) + "\n").encode()

    def close(self) -> None: ...

    def release_conn(self) -> None: ...


class Pool:
    """Stands in for urllib3's PoolManager: records each request, answers from a queue."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.answers: deque[Response] = deque()

    def request(self, method: str, url: str, body: Any = None, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        self.requests.append((method, parts.path, parse_qs(parts.query),
                              json.loads(body) if body else None))
        return self.answers.popleft() if self.answers else Response(200, {})


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def driver(pool: Pool) -> KubernetesPodDriver:
    api = client.ApiClient(client.Configuration(host="http://k8s.invalid"))
    api.rest_client.pool_manager = pool
    return KubernetesPodDriver(client.CoreV1Api(api))


def test_it_implements_the_port(driver: KubernetesPodDriver) -> None:
    assert isinstance(driver, PodDriver)


@pytest.mark.parametrize("runtime,containers", [("runc", 1), ("kata", 3)])
def test_run_posts_the_manifest_as_a_valid_pod(driver: KubernetesPodDriver, pool: Pool,
                                               runtime: str, containers: int) -> None:
    command = f.run_pod("web-1", "general-00001", runtime=runtime, containers=containers)
    pool.answers.extend([Response(201, {}), Response(201, command.manifest)])
    driver.run(command)
    [_, (method, path, _, body)] = pool.requests  # after its namespace (test_pod_refusals)
    assert (method, path) == ("POST", "/api/v1/namespaces/acme/pods")
    assert body == command.manifest
    validate(body)


def test_an_accounts_first_pod_creates_its_namespace(driver: KubernetesPodDriver,
                                                     pool: Pool) -> None:
    command = f.run_pod("web-1", "general-00001", account="globex")
    pool.answers.extend([Response(201, {}), Response(201, command.manifest)])
    driver.run(command)
    assert [(m, p) for m, p, _, _ in pool.requests] == [
        ("POST", "/api/v1/namespaces"), ("POST", "/api/v1/namespaces/globex/pods")]
    namespace = pool.requests[0][3]
    assert namespace["metadata"] == {"name": "globex", "labels": {"cis.io/account": "globex"}}
    validate(namespace)


def test_a_retried_run_finds_its_pod_and_an_old_pod_is_waited_for(
        driver: KubernetesPodDriver, pool: Pool) -> None:
    command = f.run_pod("web-1", "general-00001")
    conflict = Response(409, {"kind": "Status", "reason": "AlreadyExists"})
    pool.answers.extend([Response(201, {}), conflict, Response(200, command.manifest)])
    driver.run(command)  # the same command again: its Pod is there
    assert pool.requests[-1][:2] == ("GET", "/api/v1/namespaces/acme/pods/web-1")
    older = copy.deepcopy(command.manifest)
    older["metadata"]["annotations"]["cis.io/caused-by"] = "instance/web-1#1"
    pool.answers.extend([conflict, Response(200, older)])
    with pytest.raises(DriverError, match="exists from 'instance/web-1#1'"):
        driver.run(command)


def _ours(name: str, account: str = "acme", uid: str = "uid-1") -> Response:
    return Response(200, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": account, "uid": uid,
        "labels": {"cis.io/instance": name, "cis.io/account": account}}})


def test_delete_sends_valid_delete_options_and_a_gone_pod_is_no_error(
        driver: KubernetesPodDriver, pool: Pool) -> None:
    pool.answers.extend([_ours("web-1", uid="u1"), Response(200, {})])
    driver.delete(f.delete_pod("web-1", "general-00001", grace=0))
    pool.answers.extend([_ours("web-2", uid="u2"),
                         Response(404, {"kind": "Status", "reason": "NotFound"})])
    driver.delete(f.delete_pod("web-2", "general-00001", grace=30))
    pool.answers.append(Response(404, {"kind": "Status", "reason": "NotFound"}))
    driver.delete(f.delete_pod("web-3", "general-00001", grace=30))  # gone already: no DELETE
    (g1, m1, g2, m2, g3) = pool.requests
    assert [(r[0], r[1]) for r in (g1, g2, g3)] == [
        ("GET", f"/api/v1/namespaces/acme/pods/web-{i}") for i in (1, 2, 3)]
    (_, p1, q1, b1), (_, p2, _, b2) = m1, m2
    assert (m1[0], p1, q1["gracePeriodSeconds"]) == ("DELETE", "/api/v1/namespaces/acme/pods/web-1",
                                                      ["0"])
    assert (m2[0], p2, b2["gracePeriodSeconds"]) == ("DELETE", "/api/v1/namespaces/acme/pods/web-2",
                                                      30)
    assert (b1["preconditions"], b2["preconditions"]) == ({"uid": "u1"}, {"uid": "u2"})
    for body in (b1, b2):
        assert body["propagationPolicy"] == "Background"
        validate(body)


@pytest.mark.parametrize("labels", [{}, {"k8s-app": "kube-dns"},
                                    {"cis.io/instance": "other", "cis.io/account": "acme"},
                                    {"cis.io/instance": "coredns", "cis.io/account": "evil"}])
def test_delete_leaves_a_pod_cis_did_not_make_for_that_instance(
        driver: KubernetesPodDriver, pool: Pool, labels: dict[str, str]) -> None:
    pool.answers.append(Response(200, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "coredns", "namespace": "kube-system", "uid": "u", "labels": labels}}))
    driver.delete(f.delete_pod("coredns", "general-00001", account="kube-system"))
    assert [m for m, *_ in pool.requests] == ["GET"]


# --- Pods as the API returns them ------------------------------------------------------

def api_pod(phase: str, containers: list[dict[str, Any]] | None = None, node: bool = True,
            **status: Any) -> dict[str, Any]:
    pod = copy.deepcopy(f.run_pod("web-1", "general-00001").manifest)
    if not node:
        del pod["spec"]["nodeName"]
    pod["metadata"].update(uid="6f1c2b9e-0d5b-4c1e-9d61-2a8b3c4d5e6f", resourceVersion="4711",
                           creationTimestamp="2026-03-01T00:00:00Z")
    pod["spec"].update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
                       serviceAccountName="default", tolerations=[])
    pod["status"] = {"phase": phase, "qosClass": "Guaranteed", "hostIP": "10.0.0.7",
                     "podIP": "10.1.0.9", "startTime": "2026-03-01T00:00:01Z",
                     "conditions": [{"type": "PodScheduled", "status": "True",
                                     "lastTransitionTime": "2026-03-01T00:00:00Z"}],
                     **status}
    if containers is not None:
        pod["status"]["containerStatuses"] = [
            {"name": "c0", "image": "registry.example/app:1", "imageID": "sha256:ab12",
             "containerID": "containerd://9f8e", "ready": "running" in c["state"],
             "started": "running" in c["state"], **c} for c in containers]
    validate(pod)  # the fixture is shaped as the API's schema says
    return pod


RUNNING = {"state": {"running": {"startedAt": "2026-03-01T00:00:02Z"}}, "restartCount": 0}
CRASHED = {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
           "lastState": {"terminated": {"exitCode": 137, "reason": "Error",
                                        "startedAt": "2026-03-01T00:01:00Z",
                                        "finishedAt": "2026-03-01T00:02:00Z"}},
           "restartCount": 2}
DONE = {"state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                 "startedAt": "2026-03-01T00:00:02Z",
                                 "finishedAt": "2026-03-01T00:05:00Z"}}, "restartCount": 0}


def facts(pod: dict[str, Any], **kwargs: Any) -> list[tuple[str, Any, Any, str]]:
    out = []
    for fact in pod_facts(pod, **kwargs):
        report = command_adapter.validate_json(pod_report(fact).model_dump_json())
        assert (report.account, report.node_id, report.instance_id) == (  # type: ignore
            "acme", "general-00001", "web-1")
        out.append((report.type, getattr(report, "exit_code", None),
                    getattr(report, "reason", None), report.occurred_at.isoformat()))
    return out


def test_status_mapping_on_api_shaped_pods() -> None:
    assert facts(api_pod("Pending", node=False)) == [], "not bound: nothing to say"
    assert facts(api_pod("Pending", [{"state": {"waiting": {"reason": "ContainerCreating"}},
                                      "restartCount": 0}])) == [
        ("ReportInstanceStarting", None, None, "2026-03-01T00:00:01+00:00")]
    assert facts(api_pod("Running", [RUNNING]))[1:] == [
        ("ReportInstanceRunning", None, None, "2026-03-01T00:00:02+00:00")]
    assert facts(api_pod("Running", [CRASHED]))[1:] == [
        ("ReportContainerExited", 137, None, "2026-03-01T00:02:00+00:00")]
    assert facts(api_pod("Succeeded", [DONE]))[1:] == [
        ("ReportContainerExited", 0, None, "2026-03-01T00:05:00+00:00")]
    evicted = api_pod("Failed", [DONE], reason="Evicted",
                      message="The node was low on resource: memory.")
    assert facts(evicted)[-1][:3] == (
        "ReportInstanceTerminated", None,
        "Evicted: The node was low on resource: memory.")
    gone = api_pod("Running", [RUNNING])
    gone["metadata"]["deletionTimestamp"] = "2026-03-01T01:00:00Z"
    assert facts(gone, deleted=True)[-1] == ("ReportInstanceTerminated", None,
                                             "Pod deleted outside cis",
                                             "2026-03-01T01:00:00+00:00")
    assert [t for t, *_ in facts(gone, deleted=True, deleted_by_us=True)] == [
        "ReportInstanceStarting", "ReportInstanceRunning"]


def test_restarts_make_new_facts_and_the_same_pod_the_same_ids() -> None:
    first = [pod_report(x).command_id for x in pod_facts(api_pod("Running", [RUNNING]))]
    assert first == [pod_report(x).command_id for x in pod_facts(api_pod("Running",
                                                                         [RUNNING]))]
    again = dict(RUNNING, restartCount=3, lastState=CRASHED["lastState"])
    later = pod_facts(api_pod("Running", [again]))
    ids = [pod_report(x).command_id for x in later]
    assert ids[0] == first[0], "still the same start"
    assert len(set(ids) | set(first)) == len(ids) + 1, "a new exit and a new running"
    assert [x.sequence for x in later] == [0, 6, 7]


def test_watch_lists_then_follows_and_reports_each_fact_once(
        driver: KubernetesPodDriver, pool: Pool) -> None:
    pending = api_pod("Pending", [{"state": {"waiting": {"reason": "ContainerCreating"}},
                                   "restartCount": 0}])
    listed = {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "4711"},
              "items": [pending]}
    validate(listed)
    running = api_pod("Running", [RUNNING])
    running["metadata"]["resourceVersion"] = "4712"
    pool.answers.extend([Response(200, listed), Response(200, lines=[
        {"type": "MODIFIED", "object": running}, {"type": "MODIFIED", "object": running}])])
    assert [x.report for x in driver.watch(0)] == ["starting"]
    assert [x.report for x in driver.watch(1)] == ["running"]
    (_, p1, q1, _), (_, p2, q2, _) = pool.requests
    assert (p1, q1["labelSelector"]) == ("/api/v1/pods", ["cis.io/instance"])
    assert (q2["watch"], q2["resourceVersion"]) == (["true"], ["4711"])


def test_a_pod_of_two_containers_reports_both_first_exits_unnumbered() -> None:
    pod = api_pod("Succeeded", [DONE])
    second = dict(pod["status"]["containerStatuses"][0], name="c1")
    pod["status"]["containerStatuses"].append(second)
    pod["spec"]["containers"].append(dict(pod["spec"]["containers"][0], name="c1"))
    exits = [x for x in pod_facts(pod) if x.report == "exited"]
    # Numbered by restart count, both would be 2 and the engine would take the second as
    # stale: the instance would never end.
    assert [(x.container, x.sequence) for x in exits] == [("c0", None), ("c1", None)]
    assert all("sequence" not in pod_report(x).model_dump(exclude_none=True) for x in exits)
    assert [x.sequence for x in pod_facts(api_pod("Succeeded", [DONE]))] == [0, 2]
