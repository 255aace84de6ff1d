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
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from engine.policies.demand import DIMENSIONS
from engine.policies.runtimes import DEFAULT_CPU_OVERHEAD_MILLICORES, RUNTIMES, RuntimeProfile
from engine.policies.runtimes import profiles as resolved_profiles
from engine.policies.spec_catalogue import (
    DEFAULT_WEIGHTS,
    Reason,
    Spec,
    SpecChoice,
    SpecRejected,
    round_up,
)

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
        # The dimensions spelled out (a hot path): all(getattr ...) costs four times as much.
        return (demand["millicores"] <= self.millicores
                and demand["memory_mib"] <= self.memory_mib
                and demand["enis"] <= self.enis and demand["pods"] <= self.pods)


def _spec_text(spec: Spec | None) -> str:
    return "none" if spec is None else f"{spec.vcpu} vCPU / {spec.memory_gib} GiB"


_vector = itemgetter(*DIMENSIONS)  # a demand's values, dimensions in order


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
    # smallest_model by the demand's values (every create asks; the config cannot change).
    _smallest: dict[tuple[int, ...], NodeModel | None] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    # What other modules derive from this config alone, under their own key (scaling's node
    # groups per shape): it lives and dies with the config, so many pools never evict each
    # other's and a replaced config's answers go with it. Never compared or pickled.
    derived: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

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
        key = _vector(demand)
        try:
            return self._smallest[key]
        except KeyError:
            pass
        if len(self._smallest) >= CHOICES_AT_MOST:
            self._smallest.clear()
        model = self._smallest[key] = min(
            (m for m in self.node_models if m.holds(demand)),
            key=lambda m: (m.millicores, m.memory_mib), default=None)
        return model

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

    def _key(self, model: NodeModel) -> tuple[int, int]:
        return (model.millicores, model.memory_mib)  # smallest_model's order

    def takes(self, spec: Spec, runtime: str) -> NodeModel | None:
        """The node model a dedicated instance of `spec` gets without a selector."""
        return self.smallest_model(self.demand(spec, runtime))

    def billed_on_model(self, choice: SpecChoice, model: NodeModel,
                        weights: tuple[Decimal, Decimal], runtime: str
                        ) -> SpecChoice | SpecRejected:
        """A dedicated pool's billed spec when a node selector puts the instance on `model`:
        the cheapest catalogue spec covering the request (same weights and tie order as the
        round-up) that takes `model` without a selector, i.e. `model` holds it with the
        runtime's overhead and no smaller model does. So a selector buys a VM only at the
        price of a spec that would have bought it anyway; naming the model the round-up
        gets bills as before. None such: refused, `selector_model_unbillable`."""
        taken = self.takes(choice.billed, runtime)
        if taken is not None and self._key(taken) == self._key(model):
            return choice
        asked = choice.requested
        key = ("model", model.name, str(asked.vcpu), str(asked.memory_gib), str(weights[0]),
               str(weights[1]), runtime)
        found = self._choices.get(key)
        if found is None:
            if len(self._choices) >= CHOICES_AT_MOST:
                self._choices.clear()
            landing = [s for s in self.spec_catalogue
                       if (t := self.takes(s, runtime)) is not None
                       and self._key(t) == self._key(model)]
            raised = round_up(asked.vcpu, asked.memory_gib, landing, weights) if landing \
                else None
            if isinstance(raised, SpecChoice):
                found = SpecChoice(asked, raised.billed, model=model.name)
            else:
                held = [s for s in self.spec_catalogue
                        if model.holds(self.demand(s, runtime))]
                largest = max(held) if held else None
                found = SpecRejected((Reason(
                    "selector_model_unbillable",
                    f"node_selector puts the instance on a {model.name} node, but no catalogue "
                    f"spec covering {asked.vcpu} vCPU / {asked.memory_gib} GiB takes a "
                    f"{model.name} node with runtime {runtime} (largest spec a {model.name} "
                    f"node holds: {_spec_text(largest)}; largest in the catalogue: "
                    f"{_spec_text(max(self.spec_catalogue))})"),))
            self._choices[key] = found
        return found
