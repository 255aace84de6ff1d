"""A node pool (an auto-scaling group) in a cell, and the nodes it asks for."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id
from engine.policies.demand import DIMENSIONS
from engine.policies.spec_catalogue import Spec, SpecChoice, SpecRejected, round_up


class Pool(Recorded):
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
        self.config = config
        self.nodes_requested = 0

    class Reconfigured(Aggregate.Event):
        config: dict[str, Any]

        def apply(self, pool: Pool) -> None:
            pool.config = self.config

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

    def _memo(self) -> dict[str, Any]:
        """Values derived from the configuration, computed once per configuration."""
        memo = self.__dict__.get("_memo_cache")
        if memo is None or memo["config"] is not self.config:
            memo = self.__dict__["_memo_cache"] = {
                "config": self.config, "specs": {}, "models": {},
                "catalogue": tuple(Spec(Decimal(s["vcpu"]), Decimal(s["memory_gib"]))
                                   for s in self.config["spec_catalogue"])}
        return memo

    def billed_spec(self, vcpu: Decimal, memory_gib: Decimal) -> SpecChoice | SpecRejected:
        """The catalogue spec we bill for a requested one (tenants ask for few shapes)."""
        memo = self._memo()["specs"]
        # Keyed by spelling, not value: Decimal("49") == Decimal("49.0"), and the first
        # spelling seen would otherwise leak into another command's rejection text.
        key = (str(vcpu), str(memory_gib))
        if key not in memo:
            memo[key] = round_up(vcpu, memory_gib, self._memo()["catalogue"])
        return memo[key]

    def smallest_model(self, demand: dict[str, int]) -> dict[str, Any] | None:
        """The smallest node model that holds the demand (a dedicated node's model)."""
        memo = self._memo()["models"]
        key = tuple(demand[d] for d in DIMENSIONS)
        if key not in memo:
            holding = [m for m in self.config["node_models"]
                       if all(demand[d] <= m[d] for d in DIMENSIONS)]
            memo[key] = min(holding, key=lambda m: (m["millicores"], m["memory_mib"]),
                            default=None)
        return memo[key]

    def model(self, name: str) -> dict[str, Any]:
        return next(m for m in self.config["node_models"] if m["name"] == name)
