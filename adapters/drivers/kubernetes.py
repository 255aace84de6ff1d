"""`PodDriver` on Kubernetes, through the official `kubernetes` client.

- run: `create_namespaced_pod` of the command's manifest in the account's namespace. Only
  in a namespace cis made for that account: on its first use by this driver the namespace
  is created, labelled `cis.io/account=<account>`; one that already exists without that
  label (an account named like the mesh's or the monitoring's namespace) is refused for
  good (`namespace_not_owned`). A Pod of that name that already exists from the same
  command (its `cis.io/caused-by` annotation) is success; one from an earlier run of the
  instance still terminating is an error, retried. A Pod the API server refuses as such
  (400, 422: invalid; 403 only when PodSecurity refuses it) is refused for good:
  `DriverRefused`, which the worker dead-letters at once and reports as the instance
  terminated; anything else (other 403s, 5xx, 429, timeouts) is raised as is, retried.
  A driver that may not create namespaces reads the one operators made.
- delete: `delete_namespaced_pod` with the command's grace period; a Pod already gone is
  success.
- watch: list, then watch from the list's resourceVersion, every Pod labelled
  `cis.io/instance`; each Pod object as the API returns it is mapped to facts by
  `pod_facts` (pure, tested on API-shaped Pods): bound -> starting, all containers running
  -> running, a container's termination (current or last state) -> exited with its code,
  a Pod failed by the node (evicted, node shutdown) or deleted outside our commands ->
  terminated. Facts are keyed by the Pod's uid and restart counts, so seeing a Pod again
  names the same facts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.pods import LABEL_PREFIX
from adapters.ports import DriverError, DriverRefused, PodObservation
from schemas.infra import DeletePod, RunPod

log = logging.getLogger("cis.driver.kubernetes")

INSTANCE_LABEL = f"{LABEL_PREFIX}/instance"
CAUSED_BY = f"{LABEL_PREFIX}/caused-by"
ACCOUNT_LABEL = f"{LABEL_PREFIX}/account"
# What the API server answers a call that would be answered alike however often repeated.
# Not 404 (a namespace deleted under us is made again), 409 (AlreadyExists: idempotency),
# 429/5xx (load, outages).
PERMANENT = {400: "pod_invalid", 422: "pod_invalid"}
# A 403 is permanent only when PodSecurity refuses the Pod as such; the API server also
# answers 403 for what clears up (a namespace being terminated, an exhausted ResourceQuota,
# RBAC or webhook glitches), which is retried.
FORBIDDEN_FOR_GOOD = "violates PodSecurity"
REMEMBER_AT_MOST = 100_000  # fact keys kept to skip repeats (the engine deduplicates anyway)


def _time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def pod_facts(pod: dict[str, Any], deleted: bool = False, deleted_by_us: bool = False
              ) -> list[PodObservation]:
    """The facts a Pod object (a dict as the API returns it: camelCase) states about its
    instance. `deleted`: it came as a watch DELETED event."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    labels = meta.get("labels", {})
    node = spec.get("nodeName")
    cell, account = labels.get(f"{LABEL_PREFIX}/cell"), labels.get(f"{LABEL_PREFIX}/account")
    instance = labels.get(INSTANCE_LABEL)
    if not (node and cell and account and instance):
        return []  # not one of ours, or not bound to a node yet
    uid = meta.get("uid") or meta["name"]
    created = _time(meta.get("creationTimestamp"))
    facts: list[PodObservation] = []

    containers = status.get("containerStatuses") or []
    # Restart counts order one container's facts, not several containers' against each
    # other (two first exits would share a number and the second look stale): a Pod of
    # several containers reports unnumbered, and the engine decides by the instance's state.
    ordered = len(spec.get("containers") or containers) <= 1

    def fact(report: str, at: datetime | None, key: str, sequence: int, **more: Any) -> None:
        stamp = at or _time(status.get("startTime")) or created
        if stamp is None:
            return  # a Pod without any time is not one the API server returned
        facts.append(PodObservation(report, cell, account, instance, node, stamp,  # type: ignore
                                    f"{instance}/{uid}/{key}", sequence if ordered else None,
                                    **more))

    restarts = sum(int(c.get("restartCount", 0)) for c in containers)
    fact("starting", _time(status.get("startTime")), "starting", 0)
    for c in containers:
        count = int(c.get("restartCount", 0))
        for state, at_restart in ((c.get("lastState", {}), count - 1),
                                  (c.get("state", {}), count)):
            ended = state.get("terminated")
            if ended is not None and at_restart >= 0:
                fact("exited", _time(ended.get("finishedAt")),
                     f"exited/{c['name']}#{at_restart}", 2 + 2 * at_restart,
                     container=c["name"], exit_code=int(ended.get("exitCode", 0)) & 0xFF)
    running = [c["state"]["running"] for c in containers if "running" in c.get("state", {})]
    if status.get("phase") == "Running" and containers and len(running) == len(containers):
        started = max((t for t in (_time(r.get("startedAt")) for r in running) if t),
                      default=None)
        fact("running", started, f"running#{restarts}", 1 + 2 * restarts)
    if status.get("phase") == "Failed" and status.get("reason"):
        reason = f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
        fact("terminated", _time(meta.get("deletionTimestamp")) or created, "terminated",
             3 + 2 * restarts, reason=reason)
    elif deleted and not deleted_by_us:
        fact("terminated", _time(meta.get("deletionTimestamp")) or created, "terminated",
             3 + 2 * restarts, reason="Pod deleted outside cis")
    return facts


class KubernetesPodDriver:
    """Implements `PodDriver` (adapters/ports.py) on a `kubernetes.client.CoreV1Api`."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self._resource_version: str | None = None
        self._seen: set[str] = set()
        self._deleting: set[tuple[str, str]] = set()  # (namespace, name) we asked to delete
        self._owned: dict[str, str] = {}  # namespace -> the account cis made it for (checked)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None,
                in_cluster: bool = False) -> KubernetesPodDriver:
        from kubernetes import client, config

        if in_cluster:
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=kubeconfig, context=context)
        return cls(client.CoreV1Api())

    def run(self, command: RunPod) -> None:
        from kubernetes.client.exceptions import ApiException

        namespace = command.manifest["metadata"]["namespace"]
        self._own_namespace(namespace, command.account)
        try:
            self.core.create_namespaced_pod(namespace, command.manifest)
            return
        except ApiException as exc:
            if exc.status == 404:  # the namespace went since it was checked: made again
                self._owned.pop(namespace, None)
                self._own_namespace(namespace, command.account)
                self._create_pod(namespace, command.manifest)
                return
            if exc.status != 409:
                _raise_refusal(exc)
                raise
        existing = self.core.read_namespaced_pod(command.manifest["metadata"]["name"],
                                                 namespace)
        caused_by = (existing.metadata.annotations or {}).get(CAUSED_BY)
        if caused_by != command.caused_by:
            raise DriverError(f"Pod {namespace}/{command.instance_id} exists from "
                              f"{caused_by!r}, not {command.caused_by!r}; waiting for it to go")

    def _create_pod(self, namespace: str, manifest: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespaced_pod(namespace, manifest)
        except ApiException as exc:
            _raise_refusal(exc)
            raise

    def _own_namespace(self, namespace: str, account: str) -> None:
        """Creates the account's namespace, labelled, on its first use; an existing one must
        carry the label, or cis did not make it and no tenant Pod goes there."""
        from kubernetes.client.exceptions import ApiException

        if self._owned.get(namespace) == account:
            return
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {ACCOUNT_LABEL: account}}}
        try:
            self.core.create_namespace(body)
        except ApiException as exc:
            # 409: it exists; 403: this driver may not create namespaces (operators make
            # them): either way it must be one made for the account.
            if exc.status not in (403, 409):
                _raise_refusal(exc)
                raise
            labels = self.core.read_namespace(namespace).metadata.labels or {}
            if labels.get(ACCOUNT_LABEL) != account:
                raise DriverRefused("namespace_not_owned", (
                    f"namespace {namespace} exists and cis did not make it for account "
                    f"{account} (no label {ACCOUNT_LABEL}={account})")) from None
        if len(self._owned) > REMEMBER_AT_MOST:
            self._owned.clear()  # a bound: a namespace forgotten is checked again
        self._owned[namespace] = account

    def delete(self, command: DeletePod) -> None:
        from kubernetes.client.exceptions import ApiException

        # Only a Pod cis made for this instance: a namespace may hold Pods cis never made
        # (an account named like a system namespace, an operator's own), and the UID
        # precondition keeps a Pod that replaced the one read from being deleted instead.
        try:
            pod = self.core.read_namespaced_pod(command.pod, command.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        labels = pod.metadata.labels or {}
        if labels.get(INSTANCE_LABEL) != command.instance_id or labels.get(
                ACCOUNT_LABEL) != command.account:
            log.warning("not deleting Pod %s/%s: cis did not make it for %s/%s",
                        command.namespace, command.pod, command.account, command.instance_id)
            return
        self._deleting.add((command.namespace, command.pod))
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                "gracePeriodSeconds": command.grace_period_seconds,
                "propagationPolicy": "Background",
                "preconditions": {"uid": pod.metadata.uid}}
        try:
            self.core.delete_namespaced_pod(command.pod, command.namespace, body=body,
                                            grace_period_seconds=command.grace_period_seconds)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def watch(self, timeout_s: float) -> Sequence[PodObservation]:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        facts: list[PodObservation] = []
        if self._resource_version is None:
            listed = json.loads(self.core.list_pod_for_all_namespaces(
                label_selector=INSTANCE_LABEL, _preload_content=False).data)
            for pod in listed.get("items", []):
                facts.extend(pod_facts(pod))
            self._resource_version = listed["metadata"]["resourceVersion"]
            return self._new(facts)
        stream = watch.Watch()
        try:
            for event in stream.stream(self.core.list_pod_for_all_namespaces,
                                       label_selector=INSTANCE_LABEL,
                                       resource_version=self._resource_version,
                                       timeout_seconds=max(1, math.ceil(timeout_s)),
                                       allow_watch_bookmarks=True):
                pod = event["raw_object"]
                self._resource_version = pod["metadata"].get("resourceVersion",
                                                             self._resource_version)
                if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                deleted = event["type"] == "DELETED"
                key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
                facts.extend(pod_facts(pod, deleted, key in self._deleting))
                if deleted:
                    self._deleting.discard(key)
        except ApiException as exc:
            if exc.status != 410:
                raise
            self._resource_version = None  # history compacted away: list again
        return self._new(facts)

    def _new(self, facts: list[PodObservation]) -> list[PodObservation]:
        if len(self._seen) > REMEMBER_AT_MOST:
            self._seen.clear()  # a bound: repeats after this are deduplicated by the engine
        out: list[PodObservation] = []
        for fact in facts:
            if fact.key not in self._seen:
                self._seen.add(fact.key)
                out.append(fact)
        return out


def _raise_refusal(exc: Any) -> None:
    """An `ApiException` the same call would meet again is raised as a refusal naming the
    API server's own message; any other returns, for the caller to re-raise (retried)."""
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except (ValueError, AttributeError):
        message = exc.reason
    code = PERMANENT.get(exc.status)
    if exc.status == 403 and FORBIDDEN_FOR_GOOD in str(message or ""):
        code = "forbidden"
    if code is None:
        return
    raise DriverRefused(code, f"{exc.status} {message or ''}".strip()) from exc
