"""A node pool (an auto-scaling group) in a cell, and the nodes it asks for."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id
from engine.domain.pool_config import PoolConfig


class Pool(Recorded):
    """Its events store the config as `ConfigurePool`'s JSON; its state holds it typed."""

    @staticmethod
    def create_id(cell: str, pool: str) -> UUID:
        return aggregate_id("pool", cell, pool)

    class Configured(Aggregate.Created):
        cell: str
        pool: str
        config: dict[str, Any]

    def __init__(self, cell: str, pool: str, config: dict[str, Any]) -> None:
        self.cell = cell
        self.pool = pool
        self.config = PoolConfig.of(config)
        self.nodes_requested = 0

    class Reconfigured(Aggregate.Event):
        config: dict[str, Any]

        def apply(self, pool: Pool) -> None:
            pool.config = PoolConfig.of(self.config)

    class NodeWanted(Aggregate.Event):
        """The pool asked its ASG for one more node, and why."""

        node_id: str
        model: str
        reason: str

        def apply(self, pool: Pool) -> None:
            pool.nodes_requested += 1

    def reconfigure(self, config: dict[str, Any], at: datetime) -> None:
        self.trigger_event(self.Reconfigured, config=config, timestamp=at)

    def want_node(self, model: str, reason: str, at: datetime) -> str:
        node_id = f"{self.pool}-{self.nodes_requested + 1:05d}"
        self.trigger_event(self.NodeWanted, node_id=node_id, model=model, reason=reason,
                           timestamp=at)
        return node_id
