"""The container instance: its lifecycle as events (docs/design.md §3.1).

requested → scheduled(node) → starting → running ⇄ restarting → succeeded | failed | stopped
→ deleted; also requested → unschedulable (then scheduled) and expired (stuck pending).
Methods record facts that handlers have already decided; they never read a clock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id

PENDING = frozenset({"requested", "unschedulable"})
ON_NODE = frozenset({"scheduled", "starting", "running", "restarting"})
BILLED = frozenset({"starting", "running", "restarting"})
ENDED = frozenset({"succeeded", "failed", "stopped", "expired"})
TERMINAL = ENDED | {"deleted"}


class Instance(Recorded):
    @staticmethod
    def create_id(cell: str, account: str, name: str) -> UUID:
        # Instance ids are per account: two accounts may both name an instance `web-1`.
        return aggregate_id("instance", cell, account, name)

    class Requested(Aggregate.Created):
        cell: str
        name: str
        account: str
        pool: str
        containers: list[dict[str, Any]]
        restart_policy: str
        runtime: str
        network: dict[str, Any]
        node_selector: dict[str, str]
        requested_vcpu: Decimal
        requested_memory_gib: Decimal
        billed_vcpu: Decimal
        billed_memory_gib: Decimal
        demand: dict[str, int]

    def __init__(
        self,
        cell: str,
        name: str,
        account: str,
        pool: str,
        containers: list[dict[str, Any]],
        restart_policy: str,
        runtime: str,
        network: dict[str, Any],
        node_selector: dict[str, str],
        requested_vcpu: Decimal,
        requested_memory_gib: Decimal,
        billed_vcpu: Decimal,
        billed_memory_gib: Decimal,
        demand: dict[str, int],
    ) -> None:
        self.cell = cell
        self.name = name
        self.account = account
        self.pool = pool
        self.containers = containers
        self.restart_policy = restart_policy
        self.runtime = runtime
        self.network = network
        self.node_selector = node_selector
        self.requested_vcpu = requested_vcpu
        self.requested_memory_gib = requested_memory_gib
        self.billed_vcpu = billed_vcpu
        self.billed_memory_gib = billed_memory_gib
        self.demand = demand
        self.state = "requested"
        self.state_since: datetime = self.created_on
        self.node_id: str | None = None
        self.restarts = 0
        self.completed: dict[str, int] = {}

    @property
    def container_names(self) -> list[str]:
        return [c["name"] for c in self.containers]

    # --- transitions ---------------------------------------------------------------

    class Transitioned(Aggregate.Event):
        """Base of every state change: the new state and when it began."""

        def apply(self, instance: Instance) -> None:
            instance.state = self.new_state()
            instance.state_since = self.timestamp

        def new_state(self) -> str:
            raise NotImplementedError

    class Scheduled(Transitioned):
        node_id: str
        policy: str
        score: float

        def new_state(self) -> str:
            return "scheduled"

        def apply(self, instance: Instance) -> None:
            super().apply(instance)
            instance.node_id = self.node_id

    class Unschedulable(Transitioned):
        reasons: list[dict[str, str]]

        def new_state(self) -> str:
            return "unschedulable"

    class Starting(Transitioned):
        def new_state(self) -> str:
            return "starting"

    class Running(Transitioned):
        def new_state(self) -> str:
            return "running"

    class Restarting(Transitioned):
        container: str
        exit_code: int
        restarts: int
        backoff_seconds: int

        def new_state(self) -> str:
            return "restarting"

        def apply(self, instance: Instance) -> None:
            super().apply(instance)
            instance.restarts = self.restarts

    class ContainerCompleted(Aggregate.Event):
        """A container ended for good while its siblings go on."""

        container: str
        exit_code: int

        def apply(self, instance: Instance) -> None:
            instance.completed = {**instance.completed, self.container: self.exit_code}

    class Ended(Transitioned):
        reason: str

    class Succeeded(Ended):
        def new_state(self) -> str:
            return "succeeded"

    class Failed(Ended):
        def new_state(self) -> str:
            return "failed"

    class Stopped(Ended):
        def new_state(self) -> str:
            return "stopped"

    class Expired(Ended):
        def new_state(self) -> str:
            return "expired"

    class Deleted(Transitioned):
        def new_state(self) -> str:
            return "deleted"

    def schedule(self, node_id: str, policy: str, score: float, at: datetime) -> None:
        self.trigger_event(self.Scheduled, node_id=node_id, policy=policy, score=score,
                           timestamp=at)

    def mark_unschedulable(self, reasons: list[dict[str, str]], at: datetime) -> None:
        self.trigger_event(self.Unschedulable, reasons=reasons, timestamp=at)

    def start(self, at: datetime) -> None:
        self.trigger_event(self.Starting, timestamp=at)

    def run(self, at: datetime) -> None:
        self.trigger_event(self.Running, timestamp=at)

    def restart(self, container: str, exit_code: int, backoff_seconds: int, at: datetime) -> None:
        self.trigger_event(self.Restarting, container=container, exit_code=exit_code,
                           restarts=self.restarts + 1, backoff_seconds=backoff_seconds,
                           timestamp=at)

    def complete_container(self, container: str, exit_code: int, at: datetime) -> None:
        self.trigger_event(self.ContainerCompleted, container=container, exit_code=exit_code,
                           timestamp=at)

    def end(self, event_class: type[Ended], reason: str, at: datetime) -> None:
        self.trigger_event(event_class, reason=reason, timestamp=at)

    def delete(self, at: datetime) -> None:
        self.trigger_event(self.Deleted, timestamp=at)
