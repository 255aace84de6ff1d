"""The container instance: its lifecycle as events (docs/design.md §3.1).

requested → scheduled(node) → starting → running ⇄ restarting → succeeded | failed | stopped
→ deleted; also requested → unschedulable (then scheduled) and expired (stuck pending).
Methods record facts that handlers have already decided; they never read a clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
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
# Issue 14: at most this many restarts in this window (kubelet-like CrashLoopBackOff aside).
DEFAULT_RETRY_BUDGET = {"restarts": 10, "window_seconds": 3600}


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
        retry_budget: dict[str, int] | None = None  # None in events from before budgets

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
        retry_budget: dict[str, int] | None = None,
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
        self.attachment: dict[str, Any] | None = None  # its ENI once scheduled
        self.restarts = 0
        self.completed: dict[str, int] = {}
        self.retry_budget = retry_budget or DEFAULT_RETRY_BUDGET
        # Times of the latest restarts (at most the budget's count), for the retry budget.
        self.restart_times: list[datetime] = []
        self.backoff_streak = 0  # crashes since the last reset (CrashLoopBackOff's exponent)
        self.backoff_until: datetime | None = None  # no Running recorded before this
        self.sequence: int | None = None  # the highest report sequence applied
        self.run_held = False  # a run was reported during the back-off: it begins at its end

    @property
    def container_names(self) -> list[str]:
        return [c["name"] for c in self.containers]

    @property
    def init_container_names(self) -> frozenset[str]:
        return frozenset(c["name"] for c in self.containers if c.get("init"))

    # --- transitions ---------------------------------------------------------------

    class Transitioned(Aggregate.Event):
        """Base of every state change: the new state and when it began."""

        def apply(self, instance: Instance) -> None:
            instance.state = self.new_state()
            instance.state_since = self.timestamp
            instance.run_held = False

        def new_state(self) -> str:
            raise NotImplementedError

    class Scheduled(Transitioned):
        node_id: str
        policy: str
        score: float
        # The instance's ENI on the node (engine/placement_state.Choice.attachment); None in
        # events from before ENIs were recorded.
        attachment: dict[str, Any] | None = None

        def new_state(self) -> str:
            return "scheduled"

        def apply(self, instance: Instance) -> None:
            super().apply(instance)
            instance.node_id = self.node_id
            instance.attachment = self.attachment

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
        streak: int | None = None  # back-off exponent after it; None before issue 14

        def new_state(self) -> str:
            return "restarting"

        def apply(self, instance: Instance) -> None:
            super().apply(instance)
            instance.restarts = self.restarts
            instance.backoff_streak = self.streak if self.streak is not None else self.restarts
            instance.backoff_until = self.timestamp + timedelta(seconds=self.backoff_seconds)
            keep = instance.retry_budget["restarts"]
            instance.restart_times = [*instance.restart_times, self.timestamp][-keep:] \
                if keep else []

    class RunHeld(Aggregate.Event):
        """The node reported a run before the back-off ended: it counts from the end."""

        def apply(self, instance: Instance) -> None:
            instance.run_held = True

    class Sequenced(Aggregate.Event):
        """A report with this per-instance sequence was applied: lower ones are stale."""

        sequence: int

        def apply(self, instance: Instance) -> None:
            instance.sequence = self.sequence

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

    def schedule(self, node_id: str, policy: str, score: float, at: datetime,
                 attachment: dict[str, Any] | None = None) -> None:
        self.trigger_event(self.Scheduled, node_id=node_id, policy=policy, score=score,
                           attachment=attachment, timestamp=at)

    def mark_unschedulable(self, reasons: list[dict[str, str]], at: datetime) -> None:
        self.trigger_event(self.Unschedulable, reasons=reasons, timestamp=at)

    def start(self, at: datetime) -> None:
        self.trigger_event(self.Starting, timestamp=at)

    def run(self, at: datetime) -> None:
        self.trigger_event(self.Running, timestamp=at)

    def restart(self, container: str, exit_code: int, backoff_seconds: int, at: datetime,
                streak: int | None = None) -> None:
        self.trigger_event(self.Restarting, container=container, exit_code=exit_code,
                           restarts=self.restarts + 1, backoff_seconds=backoff_seconds,
                           streak=streak, timestamp=at)

    def restarts_within(self, window_seconds: int, at: datetime) -> int:
        """Restarts in the window of `window_seconds` ending at `at`."""
        since = at - timedelta(seconds=window_seconds)
        return sum(1 for t in self.restart_times if t > since)

    def hold_run(self, at: datetime) -> None:
        self.trigger_event(self.RunHeld, timestamp=at)

    def sequenced(self, sequence: int, at: datetime) -> None:
        self.trigger_event(self.Sequenced, sequence=sequence, timestamp=at)

    def complete_container(self, container: str, exit_code: int, at: datetime) -> None:
        self.trigger_event(self.ContainerCompleted, container=container, exit_code=exit_code,
                           timestamp=at)

    def end(self, event_class: type[Ended], reason: str, at: datetime) -> None:
        self.trigger_event(event_class, reason=reason, timestamp=at)

    def delete(self, at: datetime) -> None:
        self.trigger_event(self.Deleted, timestamp=at)
