"""The writer's in-memory state: every aggregate it owns, and indexes derived from events.

One writer per cell means the writer may decide from memory. The world is rebuilt by
replaying the log at start-up and kept current by observing each new event, through the
same `observe` path, so the indexes a decision reads are exactly what the log implies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.billing import BillingMeter
from engine.domain.cell_log import CellLog
from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import GONE, TAKES_WORK, Node
from engine.domain.pool import Pool
from engine.domain.price_book import PriceBook
from engine.placement_state import PoolPlacement
from engine.policies.quotas import AccountUsage

Key = tuple[str, str]  # (cell, name)
# What a cell-log entry carries beside its outcome.
CELL_LOG_EXTRAS = frozenset({"principal", "command_type", "digest"})
InstanceKey = tuple[str, str, str]  # (cell, account, instance_id): instance ids are per account
Ref = tuple[str, str]  # (account, instance_id): an instance within its cell
OutcomeKey = tuple[str, str]  # (principal, command_id): command ids are per principal


class World:
    def __init__(self) -> None:
        self.aggregates: dict[UUID, Aggregate] = {}
        self.instances: dict[InstanceKey, Instance] = {}
        self.nodes: dict[Key, Node] = {}
        self.pools: dict[Key, Pool] = {}
        self.price_books: dict[str, PriceBook] = {}
        self.cell_logs: dict[str, CellLog] = {}
        self.outcomes: dict[OutcomeKey, dict[str, Any]] = {}
        # Beside each recorded outcome: its command's type and content digest.
        self.commands: dict[OutcomeKey, tuple[str, str]] = {}
        # Each cell's clock: the newest time of an accepted command in it.
        self.clocks: dict[str, datetime] = {}
        self.node_instances: dict[Key, set[Ref]] = defaultdict(set)
        self.pool_nodes: dict[Key, dict[str, Node]] = defaultdict(dict)
        # Unschedulable instances per pool, oldest first (dicts keep insertion order).
        self.waiting: dict[Key, dict[Ref, Instance]] = defaultdict(dict)
        # Nodes asked for and not yet ready, per pool; each pool's placement arrays.
        self.coming: dict[Key, set[str]] = defaultdict(set)
        self.live: dict[Key, set[str]] = defaultdict(set)  # nodes not terminated or lost
        self.cordoned: dict[Key, set[str]] = defaultdict(set)
        self.placements: dict[Key, PoolPlacement] = {}
        # The ENI device index each instance on a node holds (recorded, or given on replay of
        # events from before ENIs were recorded).
        self.enis: dict[InstanceKey, int] = {}
        # Since when each node has been under its pool's scale-down threshold (event time).
        self.unneeded_since: dict[Key, datetime] = {}
        # Further derived state (the billing meter, placement arrays) observes every event.
        self.observers: list[Callable[[Any, Any], None]] = []
        self.billing = BillingMeter()  # billed intervals per instance, for finalisation
        self.observers.append(self.billing.observe)
        self.accounts = AccountUsage()  # per account: limits, live vCPU, launch bucket
        self.observers.append(self.accounts.observe)

    # --- lookups ---------------------------------------------------------------------

    def instance(self, cell: str, account: str, name: str) -> Instance | None:
        return self.instances.get((cell, account, name))

    def node(self, cell: str, node_id: str) -> Node | None:
        return self.nodes.get((cell, node_id))

    def pool(self, cell: str, name: str) -> Pool | None:
        return self.pools.get((cell, name))

    def price_book(self, cell: str) -> PriceBook | None:
        return self.price_books.get(cell)

    def cell_log(self, cell: str) -> CellLog | None:
        return self.cell_logs.get(cell)

    def instances_on(self, cell: str, node_id: str) -> list[Instance]:
        return [self.instances[(cell, *ref)]
                for ref in sorted(self.node_instances[(cell, node_id)])]

    def waiting_in(self, cell: str, pool: str) -> list[Instance]:
        return list(self.waiting[(cell, pool)].values())

    # --- keeping it current ----------------------------------------------------------

    def add(self, aggregate: Aggregate) -> None:
        if aggregate.id in self.aggregates:
            return
        self.aggregates[aggregate.id] = aggregate
        if isinstance(aggregate, Instance):
            self.instances[(aggregate.cell, aggregate.account, aggregate.name)] = aggregate
        elif isinstance(aggregate, Node):
            self.nodes[(aggregate.cell, aggregate.node_id)] = aggregate
        elif isinstance(aggregate, Pool):
            self.pools[(aggregate.cell, aggregate.pool)] = aggregate
        elif isinstance(aggregate, PriceBook):
            self.price_books[aggregate.cell] = aggregate
        elif isinstance(aggregate, CellLog):
            self.cell_logs[aggregate.cell] = aggregate

    def replay(self, event: Any) -> None:
        """Apply one stored event (start-up)."""
        aggregate = event.mutate(self.aggregates.get(event.originator_id))
        self.add(aggregate)
        self.observe(event, aggregate)

    def observe(self, event: Any, aggregate: Any) -> None:
        """Update the derived indexes after `event` has been applied to `aggregate`."""
        for observer in self.observers:
            observer(event, aggregate)
        if isinstance(aggregate, Instance):
            self._observe_instance(aggregate)
        elif isinstance(aggregate, Node):
            pool_key = (aggregate.cell, aggregate.pool)
            placement = self.placements[pool_key]
            if isinstance(event, Node.Requested):
                self.pool_nodes[pool_key][aggregate.node_id] = aggregate
                self.coming[pool_key].add(aggregate.node_id)
                self.live[pool_key].add(aggregate.node_id)
                placement.add_node(aggregate.node_id, aggregate.model, aggregate.capacity,
                                   aggregate.labels)
            else:
                self.coming[pool_key].discard(aggregate.node_id)
                if aggregate.state in GONE:
                    self.live[pool_key].discard(aggregate.node_id)
                if aggregate.state == "cordoned":
                    self.cordoned[pool_key].add(aggregate.node_id)
                else:
                    self.cordoned[pool_key].discard(aggregate.node_id)
                placement.set_takes_work(aggregate.node_id, aggregate.state in TAKES_WORK)
                if isinstance(event, Node.Uncordoned):  # taking work again: a fresh idle clock
                    self.unneeded_since.pop((aggregate.cell, aggregate.node_id), None)
                self._track_need(aggregate.cell, aggregate.pool, aggregate.node_id,
                                 event.timestamp)
        elif isinstance(aggregate, Pool):
            config = aggregate.config
            placement = self.placements.setdefault(
                (aggregate.cell, aggregate.pool),
                PoolPlacement(config["kind"], config["placement_policy"]))
            placement.policy = config["placement_policy"]
        elif isinstance(event, CellLog.CommandsHandled):
            for entry in event.outcomes:
                self.remember(entry)
            if any(entry["status"] == "accepted" for entry in event.outcomes):
                # Only accepted commands move a clock (a batch of rejections carries it over).
                clock = self.clocks.get(aggregate.cell)
                self.clocks[aggregate.cell] = max(clock or event.timestamp, event.timestamp)

    def remember(self, entry: dict[str, Any]) -> None:
        """Index one cell-log entry: an outcome, plus (since command ids are per principal)
        its command's principal, type and digest. Older entries have none: principal ""."""
        outcome = {k: v for k, v in entry.items() if k not in CELL_LOG_EXTRAS}
        key = (entry.get("principal", ""), entry["command_id"])
        self.outcomes[key] = outcome
        if "digest" in entry:
            self.commands[key] = (entry["command_type"], entry["digest"])

    def recorded(self, principal: str, command_id: str) -> OutcomeKey | None:
        """The key of the outcome recorded for this principal's command id, if any (an entry
        from before ids were per principal counts for every principal)."""
        for key in ((principal, command_id), ("", command_id)):
            if key in self.outcomes:
                return key
        return None

    def _observe_instance(self, instance: Instance) -> None:
        key = (instance.cell, instance.pool)
        ref = (instance.account, instance.name)
        if instance.state == "unschedulable":
            self.waiting[key][ref] = instance
        else:
            self.waiting[key].pop(ref, None)
        if instance.node_id is not None:
            node_key = (instance.cell, instance.node_id)
            on_node = self.node_instances[node_key]
            was_on = ref in on_node
            placement = self.placements[(instance.cell, instance.pool)]
            eni = (instance.attachment or {}).get("eni_index")
            if instance.state in ON_NODE and not was_on:
                on_node.add(ref)
                self.enis[(instance.cell, *ref)] = placement.allocate(
                    instance.node_id, instance.demand, eni)
            elif instance.state not in ON_NODE and was_on:
                on_node.discard(ref)
                placement.release(instance.node_id, instance.demand,
                                  self.enis.pop((instance.cell, *ref), eni))
            else:
                return
            self._track_need(instance.cell, instance.pool, instance.node_id,
                             instance.modified_on)

    def _track_need(self, cell: str, pool: str, node_id: str, at: datetime) -> None:
        node_key = (cell, node_id)
        node = self.pool_nodes[(cell, pool)][node_id]
        if node.state not in ("ready", "cordoned"):
            self.unneeded_since.pop(node_key, None)
            return
        config = self.pools[(cell, pool)].config
        placement = self.placements[(cell, pool)]
        if config["kind"] == "dedicated":  # a dedicated node is needed while it hosts one
            used = 1.0 if self.node_instances[node_key] else 0.0
        else:
            used = placement.utilisation(node_id)
        if used < config["scale_down_utilisation_threshold"]:
            self.unneeded_since.setdefault(node_key, at)
        else:
            self.unneeded_since.pop(node_key, None)
