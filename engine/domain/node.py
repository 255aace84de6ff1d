"""A node (VM) in a pool: requested(asg) → ready → cordoned → draining → terminated, or lost."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id

TAKES_WORK = frozenset({"ready"})
GONE = frozenset({"terminated", "lost"})
# Who cordoned a node. The autoscaler undoes only its own cordons (scale-in) and terminates
# only nodes it emptied; a node held by an operator or at start-up waits for UncordonNode.
BY_AUTOSCALER, BY_OPERATOR, AT_START = "autoscaler", "operator", "start"


def node_group(cell: str, pool: str, model: str) -> str:
    """The auto-scaling group a node belongs to: one per cell, pool and node model."""
    return f"{cell}-{pool}-{model}"


class Node(Recorded):
    @staticmethod
    def create_id(cell: str, node_id: str) -> UUID:
        return aggregate_id("node", cell, node_id)

    class Requested(Aggregate.Created):
        cell: str
        node_id: str
        pool: str
        model: str
        capacity: dict[str, int]
        labels: dict[str, str]
        reason: str

    def __init__(
        self,
        cell: str,
        node_id: str,
        pool: str,
        model: str,
        capacity: dict[str, int],
        labels: dict[str, str],
        reason: str,
    ) -> None:
        self.cell = cell
        self.node_id = node_id
        self.pool = pool
        self.model = model
        self.capacity = capacity
        self.labels = labels
        self.state = "requested"
        self.cordoned_by: str | None = None

    class Ready(Aggregate.Event):
        def apply(self, node: Node) -> None:
            node.state = "ready"

    class Lost(Aggregate.Event):
        reason: str

        def apply(self, node: Node) -> None:
            node.state = "lost"

    class Cordoned(Aggregate.Event):
        """Takes no new instances; empties as its instances end. Never evicts."""

        reason: str
        by: str = BY_AUTOSCALER  # events recorded before there were other cordons

        def apply(self, node: Node) -> None:
            node.state = "cordoned"
            node.cordoned_by = self.by

    class Uncordoned(Aggregate.Event):
        reason: str

        def apply(self, node: Node) -> None:
            node.state = "ready"
            node.cordoned_by = None

    class Terminated(Aggregate.Event):
        reason: str

        def apply(self, node: Node) -> None:
            node.state = "terminated"

    def cordon(self, reason: str, at: datetime, by: str = BY_AUTOSCALER) -> None:
        self.trigger_event(self.Cordoned, reason=reason, by=by, timestamp=at)

    @property
    def held(self) -> bool:
        """Cordoned by someone other than the autoscaler: not the autoscaler's to undo."""
        return self.state == "cordoned" and self.cordoned_by not in (None, BY_AUTOSCALER)

    def uncordon(self, reason: str, at: datetime) -> None:
        self.trigger_event(self.Uncordoned, reason=reason, timestamp=at)

    def terminate(self, reason: str, at: datetime) -> None:
        self.trigger_event(self.Terminated, reason=reason, timestamp=at)

    def mark_ready(self, at: datetime) -> None:
        self.trigger_event(self.Ready, timestamp=at)

    def mark_lost(self, reason: str, at: datetime) -> None:
        self.trigger_event(self.Lost, reason=reason, timestamp=at)
