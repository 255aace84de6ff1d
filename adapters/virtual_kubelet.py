"""The virtual-kubelet side: a user's cluster sees CIS as one virtual node.

A Pod the user's scheduler binds to the virtual node becomes a `CreateInstance`; the
instance's state, as the engine's projection has it, becomes that Pod's status. This module
is the provider contract's logic, one method per call of virtual-kubelet's PodLifecycleHandler
and PodNotifier:

    CreatePod -> create_pod      GetPod       -> get_pod      GetPods    -> get_pods
    UpdatePod -> update_pod      GetPodStatus -> get_pod_status
    DeletePod -> delete_pod      NotifyPods   -> notify_pods (+ `sync`, which polls and calls
                                                back for the Pods whose status changed)

Pods are dicts as the Kubernetes API returns them (camelCase). Commands go out through
`submit` (e.g. a Publisher on cis.commands); instance rows come from `lookup` (e.g. the
query API's /instances). A Pod CIS cannot run is refused with every reason at once. Not
here: the virtual-kubelet process itself (Go) and its transport to this logic.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from pydantic import ValidationError

from adapters.pods import LABEL_PREFIX
from schemas.commands import CreateInstance, DeleteInstance

Submit = Callable[[Any], None]
Lookup = Callable[[str], dict[str, Any] | None]  # instance_id -> its projection row or None
Notify = Callable[[dict[str, Any]], None]

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
GIB = Decimal(1024 ** 3)


class PodRefused(ValueError):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def instance_id_of(namespace: str, name: str) -> str:
    """One instance per Pod of the account: `{namespace}-{name}`, a DNS label (long or
    dotted names keep their head and end in a digest)."""
    whole = f"{namespace}-{name}".replace(".", "-").lower()
    if LABEL.match(whole):
        return whole
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    return f"{whole[:54].strip('-')}-{digest}"


def _quantity(text: str, scale: Decimal = Decimal(1)) -> Decimal:
    from kubernetes.utils import parse_quantity

    return (Decimal(parse_quantity(text)) / scale).quantize(Decimal("0.001"),
                                                            rounding=ROUND_CEILING)


@dataclass
class VirtualKubeletProvider:
    node_name: str
    cell: str
    account: str
    submit: Submit
    lookup: Lookup
    pool: str = "general"
    network: dict[str, Any] = field(default_factory=dict)  # default vpc/subnet/groups
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _notify: Notify | None = None
    _notified: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    # --- PodLifecycleHandler ------------------------------------------------------------

    def create_pod(self, pod: dict[str, Any]) -> CreateInstance:
        command = self.create_instance(pod)
        self.submit(command)
        meta = pod["metadata"]
        self._pods[(meta.get("namespace", "default"), meta["name"])] = copy.deepcopy(pod)
        return command

    def update_pod(self, pod: dict[str, Any]) -> None:
        """Kubernetes lets only a Pod's metadata (and a few fields CIS does not use)
        change: the new object is kept, nothing is asked of CIS."""
        meta = pod["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if key not in self._pods:
            raise KeyError(f"no Pod {key[0]}/{key[1]} on {self.node_name}")
        self._pods[key] = copy.deepcopy(pod)

    def delete_pod(self, pod: dict[str, Any]) -> DeleteInstance | None:
        meta = pod["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if self._pods.pop(key, None) is None:
            return None  # not ours (any more): deleting twice is no error
        self._notified.pop(key, None)
        command = DeleteInstance(
            command_id=f"vk:{meta.get('uid') or instance_id_of(*key)}:delete", cell=self.cell,
            issued_at=self.clock(), account=self.account, instance_id=instance_id_of(*key))
        self.submit(command)
        return command

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self._pods.get((namespace, name))
        if pod is None:
            return None
        status = self.get_pod_status(namespace, name)
        return {**copy.deepcopy(pod), "status": status}

    def get_pod_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self._pods.get((namespace, name))
        if pod is None:
            return None
        return pod_status(pod, self.lookup(instance_id_of(namespace, name)))

    def get_pods(self) -> list[dict[str, Any]]:
        return [p for p in (self.get_pod(*key) for key in sorted(self._pods)) if p is not None]

    # --- PodNotifier ------------------------------------------------------------------

    def notify_pods(self, callback: Notify) -> None:
        self._notify = callback

    def sync(self) -> int:
        """Look up every Pod's instance; call back with each Pod whose status changed."""
        changed = 0
        for key in sorted(self._pods):
            pod = self.get_pod(*key)
            if pod is None or self._notified.get(key) == pod["status"]:
                continue
            self._notified[key] = pod["status"]
            changed += 1
            if self._notify is not None:
                self._notify(pod)
        return changed

    # --- the mapping ------------------------------------------------------------------

    def create_instance(self, pod: dict[str, Any]) -> CreateInstance:
        """The CreateInstance a Pod bound to the virtual node asks for."""
        meta, spec = pod["metadata"], pod.get("spec", {})
        annotations = meta.get("annotations") or {}
        reasons: list[str] = []
        if spec.get("nodeName") != self.node_name:
            reasons.append(f"spec.nodeName: not bound to {self.node_name}")
        if spec.get("initContainers"):
            reasons.append("spec.initContainers: not supported")
        if spec.get("volumes"):
            reasons.append("spec.volumes: not supported")
        containers = []
        for k, c in enumerate(spec.get("containers") or []):
            containers.append(self._container(c, f"spec.containers[{k}]", reasons))
        runtime = spec.get("runtimeClassName") or "runc"
        network = {**self.network}
        for key in ("vpc", "subnet"):
            if f"{LABEL_PREFIX}/{key}" in annotations:
                network[key] = annotations[f"{LABEL_PREFIX}/{key}"]
        if f"{LABEL_PREFIX}/security-groups" in annotations:
            network["security_groups"] = [
                g for g in annotations[f"{LABEL_PREFIX}/security-groups"].split(",") if g]
        namespace = meta.get("namespace", "default")
        fields = {
            "command_id": f"vk:{meta.get('uid') or instance_id_of(namespace, meta['name'])}"
                          ":create",
            "cell": self.cell, "account": self.account,
            "issued_at": _time(meta.get("creationTimestamp")) or self.clock(),
            "instance_id": instance_id_of(namespace, meta["name"]),
            "pool": (spec.get("nodeSelector") or {}).get(f"{LABEL_PREFIX}/pool")
            or annotations.get(f"{LABEL_PREFIX}/pool") or self.pool,
            "containers": containers, "restart_policy": spec.get("restartPolicy", "Always"),
            "runtime": runtime, "network": network}
        try:
            command = CreateInstance(**fields)
        except ValidationError as exc:
            reasons.extend(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors())
            raise PodRefused(reasons) from None
        if reasons:
            raise PodRefused(reasons)
        return command

    @staticmethod
    def _container(c: dict[str, Any], where: str, reasons: list[str]) -> dict[str, Any]:
        resources = c.get("resources") or {}
        asked = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        out: dict[str, Any] = {"name": c.get("name"), "image": c.get("image")}
        try:
            out["vcpu"] = _quantity(str(asked["cpu"]))
            out["memory_gib"] = _quantity(str(asked["memory"]), GIB)
        except KeyError as missing:
            reasons.append(f"{where}.resources: give {missing.args[0]} (CIS bills what is "
                           "asked)")
        except ValueError as exc:
            reasons.append(f"{where}.resources: {exc}")
        command = [*(c.get("command") or []), *(c.get("args") or [])]
        if command:
            out["command"] = command
        env = {}
        for var in c.get("env") or []:
            if "valueFrom" in var:
                reasons.append(f"{where}.env[{var.get('name')}]: valueFrom not supported")
            else:
                env[var["name"]] = var.get("value", "")
        if env:
            out["env"] = env
        if c.get("ports"):
            out["ports"] = [p["containerPort"] for p in c["ports"]]
        return out


def _time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(text: str | None) -> str | None:
    """The projection's times as Kubernetes writes them (RFC 3339, seconds, Z)."""
    stamp = _time(text)
    return None if stamp is None else stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(pod: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    """A Pod's status from its instance's row (None: the engine has not taken it yet)."""
    names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    images = {c["name"]: c.get("image", "") for c in pod.get("spec", {}).get("containers", [])}
    state = row["state"] if row else "requested"
    since = _iso(row.get("state_since")) if row else None
    restarts = int(row.get("restarts") or 0) if row else 0
    reason = (row or {}).get("reason") or ""

    def containers(current: dict[str, Any], ready: bool) -> list[dict[str, Any]]:
        return [{"name": n, "image": images[n], "imageID": "", "ready": ready,
                 "started": "running" in current, "restartCount": restarts,
                 "state": current} for n in names]

    scheduled = state not in ("requested", "unschedulable")
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                   **({"reason": "Unschedulable"} if state == "unschedulable" else {}),
                   **({"lastTransitionTime": since} if since else {})}]
    status: dict[str, Any] = {"phase": "Pending", "conditions": conditions}
    if state in ("scheduled", "starting"):
        status["containerStatuses"] = containers(
            {"waiting": {"reason": "ContainerCreating"}}, False)
    elif state == "running":
        status["phase"] = "Running"
        status["containerStatuses"] = containers({"running": {"startedAt": since}}, True)
    elif state == "restarting":
        status["phase"] = "Running"
        status["containerStatuses"] = containers(
            {"waiting": {"reason": "CrashLoopBackOff", "message": reason or "back-off"}}, False)
    elif state in ("succeeded", "failed", "stopped", "expired", "deleted"):
        status["phase"] = "Succeeded" if state in ("succeeded", "stopped") else "Failed"
        status["reason"] = state.capitalize()
        if reason:
            status["message"] = reason
        code = 0 if state in ("succeeded", "stopped") else 1
        status["containerStatuses"] = containers(
            {"terminated": {"exitCode": code, "reason": state.capitalize(),
                            **({"finishedAt": since} if since else {})}}, False)
    ready = status["phase"] == "Running" and state == "running"
    conditions.append({"type": "Ready", "status": "True" if ready else "False",
                       **({"lastTransitionTime": since} if since else {})})
    if row and row.get("created_at"):
        status["startTime"] = _iso(row["created_at"])
    return status
