"""A node pool (an auto-scaling group) in a cell, and the nodes it asks for."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id
from engine.policies.demand import DIMENSIONS, demand_of
from engine.policies.spec_catalogue import (
    DEFAULT_WEIGHTS,
    Spec,
    SpecChoice,
    SpecRejected,
    round_up,
)

SPEC_MEMO_AT_MOST = 10_000


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

    def billed_spec(self, vcpu: Decimal, memory_gib: Decimal,
                    weights: tuple[Decimal, Decimal] = DEFAULT_WEIGHTS,
                    runtime: str | None = None) -> SpecChoice | SpecRejected:
        """The catalogue spec we bill for a requested one: the cheapest covering spec at
        `weights` (the rates per vCPU and per GiB in force) among those some node model can
        hold with `runtime`'s overhead; tenants ask for few shapes."""
        memo = self._memo()["specs"]
        # Keyed by spelling, not value: Decimal("49") == Decimal("49.0"), and the first
        # spelling seen would otherwise leak into another command's rejection text.
        key = (str(vcpu), str(memory_gib), weights, runtime)
        if key not in memo:
            if len(memo) >= SPEC_MEMO_AT_MOST:
                memo.clear()  # a bound: price versions come and go
            memo[key] = round_up(vcpu, memory_gib, self._holdable(runtime), weights)
        return memo[key]

    def _holdable(self, runtime: str | None) -> tuple[Spec, ...]:
        """The catalogue specs a node model of this pool can hold with the runtime's
        overhead: a cheaper spec no node can hold must not be chosen over one that fits.
        (None of them: the whole catalogue, so the create is refused for the reason.)"""
        catalogue = self._memo()["catalogue"]
        if runtime is None:
            return catalogue
        holdable = self._memo().setdefault("holdable", {})
        if runtime not in holdable:
            fits = tuple(spec for spec in catalogue if self.smallest_model(
                demand_of(spec.vcpu, spec.memory_gib, runtime, self.config)) is not None)
            holdable[runtime] = fits or catalogue
        return holdable[runtime]

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
