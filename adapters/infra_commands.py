"""Which VM and Pod commands each event implies (the outbox's translation; no I/O).

Events say what the engine decided; these commands ask the infrastructure to make it so.
Only a few kinds of event matter (`TOPICS`), so the outbox asks the store for just those;
for them the translator remembers what it needs of each instance (its spec, its node) and
node (its group), and loads an aggregate from the store only when it has not seen that
aggregate's earlier events (an outbox started in the middle of the log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from adapters.pods import STOP_GRACE_SECONDS, pod_manifest, pod_name
from engine.application import CisApplication
from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import Node, node_group
from schemas.infra import DeletePod, InfraCommandBase, ProvisionNode, RunPod, TerminateNode

Loader = Callable[[UUID, int], Any]  # aggregate id, version -> the aggregate at that version
REMEMBER_AT_MOST = 100_000  # records kept; a forgotten one is loaded again when needed

LEAVES_NODE = (Instance.Succeeded, Instance.Failed, Instance.Stopped, Instance.Expired,
               Instance.Deleted)
TOPICS: tuple[str, ...] = tuple(get_topic(cls) for cls in (
    Node.Requested, Node.Terminated, Instance.Requested, Instance.Scheduled, *LEAVES_NODE))
LEAVES_NODE_TOPICS = frozenset(get_topic(cls) for cls in LEAVES_NODE)
DELETED = get_topic(Instance.Deleted)


@dataclass
class Placed:
    """What translation needs of an instance: its spec (the aggregate as created) and the
    node it is on, if any."""

    spec: Instance
    node_id: str | None


class InfraTranslator:
    def __init__(self, load: Loader) -> None:
        self._load = load
        self._instances: dict[UUID, Placed] = {}
        self._nodes: dict[UUID, Node] = {}

    @classmethod
    def of(cls, app: CisApplication) -> InfraTranslator:
        """A translator that loads what it has not seen from `app`'s store."""
        return cls(lambda aggregate_id, version: app.repository.get(aggregate_id,
                                                                    version=version))

    def translate(self, event: Any) -> list[InfraCommandBase]:
        """The commands `event` implies (none for events outside `TOPICS`). Events of one
        aggregate must come in order; others of it may be skipped."""
        if isinstance(event, Node.Requested):
            node = event.mutate(None)
            self._remember(self._nodes, node.id, node)
            return [ProvisionNode(**_node_fields(event, node), model=node.model,
                                  capacity=dict(node.capacity), labels=dict(node.labels),
                                  reason=event.reason)]
        if isinstance(event, Node.Terminated):
            node = self._nodes.pop(event.originator_id, None) \
                or self._load(event.originator_id, event.originator_version - 1)
            return [TerminateNode(**_node_fields(event, node), reason=event.reason)]
        if isinstance(event, Instance.Requested):
            self._remember(self._instances, event.originator_id, Placed(event.mutate(None), None))
            return []
        if isinstance(event, Instance.Scheduled):
            placed = self._placed(event)
            placed.node_id = event.node_id
            placed.spec.attachment = event.attachment  # its ENI, for the Pod's annotations
            fields = _instance_fields(event, placed.spec)
            return [RunPod(**fields, node_id=event.node_id,
                           manifest=pod_manifest(placed.spec, event.node_id, fields["caused_by"]))]
        if isinstance(event, LEAVES_NODE):
            placed = self._placed(event)
            if isinstance(event, Instance.Deleted):
                self._instances.pop(event.originator_id, None)  # nothing comes after
            if placed.node_id is None:
                return []
            node_id, placed.node_id = placed.node_id, None
            namespace, pod = pod_name(placed.spec)
            # A stop asks the containers to exit; after a completion or a failure they have.
            stopping = isinstance(event, Instance.Stopped | Instance.Deleted)
            return [DeletePod(**_instance_fields(event, placed.spec), node_id=node_id,
                              namespace=namespace, pod=pod,
                              reason=getattr(event, "reason", "deleted"),
                              grace_period_seconds=STOP_GRACE_SECONDS if stopping else 0)]
        return []

    def off_node(self, instance_id: UUID) -> bool:
        """Whether the instance is known to be on no node: then an event of it leaving one
        implies no command, and need not even be decoded."""
        placed = self._instances.get(instance_id)
        return placed is not None and placed.node_id is None

    def forget(self, instance_id: UUID) -> None:
        """Drop what is remembered of a deleted instance (nothing of it comes after)."""
        self._instances.pop(instance_id, None)

    def _placed(self, event: Any) -> Placed:
        placed = self._instances.get(event.originator_id)
        if placed is None:  # not seen from its start: as the store has it before this event
            instance = self._load(event.originator_id, event.originator_version - 1)
            placed = Placed(instance, instance.node_id if instance.state in ON_NODE else None)
            self._remember(self._instances, event.originator_id, placed)
        return placed

    @staticmethod
    def _remember(records: dict[UUID, Any], key: UUID, value: Any) -> None:
        if len(records) >= REMEMBER_AT_MOST:
            records.clear()  # a simple bound: what is needed again is loaded again
        records[key] = value


def commands_in(app: CisApplication) -> list[InfraCommandBase]:
    """Every command the whole log implies, in log order (the demo; audits)."""
    translator = InfraTranslator.of(app)
    out: list[InfraCommandBase] = []
    after = 0
    while page := app.page(after, topics=TOPICS):
        out.extend(c for _, event in page for c in translator.translate(event))
        after = page[-1][0]
    return out


def _caused_by(kind: str, name: str, event: Any) -> str:
    return f"{kind}/{name}#{event.originator_version}"


def _node_fields(event: Any, node: Node) -> dict[str, Any]:
    caused_by = _caused_by("node", node.node_id, event)
    return {"command_id": f"{node.cell}:{caused_by}", "caused_by": caused_by,
            "at": event.timestamp, "cell": node.cell, "node_id": node.node_id,
            "pool": node.pool, "node_group": node_group(node.cell, node.pool, node.model)}


def _instance_fields(event: Any, instance: Instance) -> dict[str, Any]:
    caused_by = _caused_by("instance", instance.name, event)
    # Instance ids are per account: the account keeps two tenants' `web-1` apart.
    return {"command_id": f"{instance.cell}:{instance.account}:{caused_by}",
            "caused_by": caused_by,
            "at": event.timestamp, "cell": instance.cell, "instance_id": instance.name,
            "account": instance.account}
