"""Which VM and Pod commands each event implies (the outbox's translation; no I/O).

Events say what the engine decided; these commands ask the infrastructure to make it so.
Some need the aggregate as it was just before the event (which node an ending instance was
on), so the translator follows each instance and node it meets, and loads one from the store
only when it has not followed it since that aggregate's start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from adapters.pods import STOP_GRACE_SECONDS, pod_manifest, pod_name
from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import GONE, Node
from schemas.infra import DeletePod, InfraCommandBase, ProvisionNode, RunPod, TerminateNode

Loader = Callable[[UUID, int], Any]  # aggregate id, version -> the aggregate at that version
FOLLOW_AT_MOST = 100_000  # aggregates kept; a forgotten one is loaded again when needed


def node_group(cell: str, pool: str, model: str) -> str:
    return f"{cell}-{pool}-{model}"


@dataclass(frozen=True)
class Before:
    """What translation needs of the aggregate before the event."""

    state: str | None
    node_id: str | None


class InfraTranslator:
    def __init__(self, load: Loader) -> None:
        self._load = load
        self._followed: dict[UUID, Any] = {}

    def translate(self, event: Any) -> list[InfraCommandBase]:
        if not isinstance(event, Instance.Event | Node.Event):
            return []
        aggregate = self._aggregate_before(event)
        before = Before(getattr(aggregate, "state", None), getattr(aggregate, "node_id", None))
        after = event.mutate(aggregate)
        self._follow(after)
        if isinstance(after, Node):
            return node_commands(event, after)
        return instance_commands(event, before, after)

    def _aggregate_before(self, event: Any) -> Any:
        version = event.originator_version
        known = self._followed.pop(event.originator_id, None)
        if version == 1:
            return None
        if known is None or known.version != version - 1:
            known = self._load(event.originator_id, version - 1)
        return known

    def _follow(self, aggregate: Any) -> None:
        if isinstance(aggregate, Instance) and aggregate.state == "deleted":
            return  # no event comes after
        if isinstance(aggregate, Node) and aggregate.state in GONE:
            return
        if len(self._followed) >= FOLLOW_AT_MOST:
            self._followed.clear()  # a simple bound: what is needed again is loaded again
        self._followed[aggregate.id] = aggregate


def _caused_by(kind: str, name: str, event: Any) -> dict[str, Any]:
    caused_by = f"{kind}/{name}#{event.originator_version}"
    return {"caused_by": caused_by, "at": event.timestamp}


def node_commands(event: Any, node: Node) -> list[InfraCommandBase]:
    common = {**_caused_by("node", node.node_id, event), "cell": node.cell,
              "node_id": node.node_id, "pool": node.pool,
              "node_group": node_group(node.cell, node.pool, node.model)}
    common["command_id"] = f"{node.cell}:{common['caused_by']}"
    if isinstance(event, Node.Requested):
        return [ProvisionNode(**common, model=node.model, capacity=dict(node.capacity),
                              labels=dict(node.labels), reason=event.reason)]
    if isinstance(event, Node.Terminated):
        return [TerminateNode(**common, reason=event.reason)]
    return []  # ready, lost, (un)cordoned: facts from, or only for, the engine itself


def instance_commands(event: Any, before: Before, instance: Instance
                      ) -> list[InfraCommandBase]:
    common = {**_caused_by("instance", instance.name, event), "cell": instance.cell,
              "instance_id": instance.name, "account": instance.account}
    common["command_id"] = f"{instance.cell}:{common['caused_by']}"
    if isinstance(event, Instance.Scheduled):
        return [RunPod(**common, node_id=event.node_id,
                       manifest=pod_manifest(instance, event.node_id, common["caused_by"]))]
    leaves_node = isinstance(event, Instance.Ended | Instance.Deleted)
    if leaves_node and before.state in ON_NODE and before.node_id is not None:
        namespace, pod = pod_name(instance)
        # A stop asks the containers to exit; after a completion or a failure they have.
        grace = STOP_GRACE_SECONDS if isinstance(event, Instance.Stopped | Instance.Deleted) \
            else 0
        reason = getattr(event, "reason", "deleted")
        return [DeletePod(**common, node_id=before.node_id, namespace=namespace, pod=pod,
                          reason=reason, grace_period_seconds=grace)]
    return []
