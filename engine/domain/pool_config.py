"""A pool's configuration as a value: typed and frozen, read from the dict a `Pool.Configured`
or `Reconfigured` event stores (of any age: keys added since default as `ConfigurePool` does),
with what placement derives from it (docs/design.md §3.7, §7.2).

The events keep their stored shape (the command's JSON dump); only the state is typed, so
no rate or price is ever read back from a string at decision time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from engine.policies.demand import DIMENSIONS
from engine.policies.runtimes import DEFAULT_CPU_OVERHEAD_MILLICORES, RUNTIMES, RuntimeProfile
from engine.policies.runtimes import profiles as resolved_profiles
from engine.policies.spec_catalogue import DEFAULT_WEIGHTS, Spec, SpecChoice, SpecRejected, round_up

# Bounds the spec choices a config keeps (price versions come and go).
CHOICES_AT_MOST = 10_000


@dataclass(frozen=True, slots=True)
class NodeModel:
    """A VM shape an ASG can launch (one node group of a pool)."""

    name: str
    millicores: int
    memory_mib: int
    enis: int = 8
    pods: int = 110
    price_per_hour: Decimal = Decimal(0)
    priority: int = 0

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> NodeModel:
        return cls(name=raw["name"], millicores=raw["millicores"], memory_mib=raw["memory_mib"],
                   enis=raw.get("enis", 8), pods=raw.get("pods", 110),
                   price_per_hour=Decimal(str(raw.get("price_per_hour", 0))),
                   priority=raw.get("priority", 0))

    @property
    def capacity(self) -> dict[str, int]:
        return {d: getattr(self, d) for d in DIMENSIONS}

    def holds(self, demand: Mapping[str, int]) -> bool:
        return all(demand[d] <= getattr(self, d) for d in DIMENSIONS)


def _frozen(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class PoolConfig:
    """Everything `ConfigurePool` sets, typed; defaults are the command's own."""

    kind: str
    node_models: tuple[NodeModel, ...]
    spec_catalogue: tuple[Spec, ...]
    min_nodes: int = 0
    max_nodes: int = 100
    labels: Mapping[str, str] = field(default_factory=dict)
    pending_timeout_seconds: int = 900
    scheduled_timeout_seconds: int = 300
    starting_timeout_seconds: int = 600
    placement_policy: str = "best_fit"
    expander: str = "least-waste"
    scale_down_utilisation_threshold: float = 0.5
    scale_down_unneeded_seconds: int = 600
    disruption_budget: int = 1
    cpu_overhead_millicores: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_CPU_OVERHEAD_MILLICORES))
    # Every runtime's profile: the seed's, with the pool's overrides on top.
    runtime_profiles: Mapping[str, RuntimeProfile] = field(
        default_factory=lambda: resolved_profiles({}))
    start_cordoned: bool = False
    # Derived from the fields above (never compared, never pickled): the catalogue specs a
    # node model can hold per runtime, worked out once; spec choices by the request's exact
    # spelling (Decimal("49") == Decimal("49.0"), but each answer names its own question).
    _holdable: Mapping[str, tuple[Spec, ...]] = field(init=False, repr=False, compare=False)
    _choices: dict[tuple[Any, ...], SpecChoice | SpecRejected] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("labels", "cpu_overhead_millicores", "runtime_profiles"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "node_models", tuple(self.node_models))
        object.__setattr__(self, "spec_catalogue", tuple(self.spec_catalogue))
        holdable = {}
        for runtime in RUNTIMES:
            fits = tuple(s for s in self.spec_catalogue if self.smallest_model(
                self.demand(s, runtime)) is not None)
            holdable[runtime] = fits or self.spec_catalogue
        object.__setattr__(self, "_holdable", MappingProxyType(holdable))

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> PoolConfig:
        """The config an event stores (`ConfigurePool` minus its envelope, as JSON)."""
        known = {f.name for f in fields(cls) if f.init}
        values = {k: v for k, v in raw.items() if k in known}
        values["node_models"] = tuple(NodeModel.of(m) for m in raw["node_models"])
        values["spec_catalogue"] = tuple(Spec(Decimal(str(s["vcpu"])),
                                              Decimal(str(s["memory_gib"])))
                                         for s in raw["spec_catalogue"])
        values["runtime_profiles"] = resolved_profiles(raw)
        return cls(**values)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Plain values only (a read-only view does not pickle); derived parts are rebuilt.
        return (PoolConfig, tuple(
            dict(v) if isinstance(v, MappingProxyType) else v
            for v in (getattr(self, f.name) for f in fields(self) if f.init)))

    def same(self, other: PoolConfig) -> bool:
        """Equal and spelled alike: a catalogue spec's spelling ("1" or "1.0") is what a
        billed spec and a refusal say, so a respelled config is a change."""
        return self == other and self._spelling() == other._spelling()

    def _spelling(self) -> tuple[tuple[str, ...], ...]:
        return (tuple(str(m.price_per_hour) for m in self.node_models),
                tuple(f"{s.vcpu}/{s.memory_gib}" for s in self.spec_catalogue))

    def model(self, name: str) -> NodeModel:
        return next(m for m in self.node_models if m.name == name)

    def smallest_model(self, demand: Mapping[str, int]) -> NodeModel | None:
        """The smallest node model that holds the demand (a dedicated node's model)."""
        return min((m for m in self.node_models if m.holds(demand)),
                   key=lambda m: (m.millicores, m.memory_mib), default=None)

    def demand(self, billed: Spec, runtime: str) -> dict[str, int]:
        """What an instance of `billed` takes from a node: the spec plus the pool's overhead
        for `runtime` (its cpu_overhead_millicores and its profile's memory overhead, as
        RuntimeClass `overhead.podFixed` declares them)."""
        return {
            "millicores": math.ceil(billed.vcpu * 1000)
            + self.cpu_overhead_millicores.get(runtime, 0),
            "memory_mib": math.ceil(billed.memory_gib * 1024)
            + self.runtime_profiles[runtime].memory_overhead_mib,
            "enis": 1,  # each instance takes one elastic network interface
            "pods": 1,
        }

    def billed_spec(self, vcpu: Decimal, memory_gib: Decimal,
                    weights: tuple[Decimal, Decimal] = DEFAULT_WEIGHTS,
                    runtime: str | None = None) -> SpecChoice | SpecRejected:
        """The catalogue spec we bill for a requested one: the cheapest covering spec at
        `weights` (the rates per vCPU and per GiB in force) among those some node model can
        hold with `runtime`'s overhead (none of them: the whole catalogue, so the create is
        refused for the reason)."""
        key = (str(vcpu), str(memory_gib), str(weights[0]), str(weights[1]), runtime)
        choice = self._choices.get(key)
        if choice is None:
            if len(self._choices) >= CHOICES_AT_MOST:
                self._choices.clear()
            catalogue = self.spec_catalogue if runtime is None else self._holdable[runtime]
            choice = self._choices[key] = round_up(vcpu, memory_gib, catalogue, weights)
        return choice
