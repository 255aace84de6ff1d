"""The simplest correct placement: smallest fitting model, first node with room.

Pure: it reads plain values and returns a decision; the handler records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.policies.demand import DIMENSIONS, fits, shortfalls


@dataclass(frozen=True)
class NodeView:
    node_id: str
    model: str
    state: str
    labels: dict[str, str]
    capacity: dict[str, int]
    allocated: dict[str, int]
    instances: int

    @property
    def free(self) -> dict[str, int]:
        return {d: self.capacity[d] - self.allocated[d] for d in DIMENSIONS}


@dataclass(frozen=True)
class Placed:
    node_id: str
    policy: str
    score: float


@dataclass(frozen=True)
class NotPlaced:
    reasons: list[dict[str, str]]


def smallest_model(models: list[dict[str, Any]], demand: dict[str, int]) -> dict[str, Any] | None:
    holding = [m for m in models if fits(demand, m)]
    return min(holding, key=lambda m: (m["millicores"], m["memory_mib"]), default=None)


def place(
    kind: str, demand: dict[str, int], selector: dict[str, str], nodes: list[NodeView],
    model: str,
) -> Placed | NotPlaced:
    """Dedicated pools take an empty ready node of the instance's model; shared pools the
    first ready node with room in every dimension."""
    candidates = [n for n in nodes if n.state == "ready"
                  and all(n.labels.get(k) == v for k, v in selector.items())]
    if not candidates:
        return NotPlaced([{"field": "node", "problem": "no ready node matches the selector"}])
    if kind == "dedicated":
        for n in candidates:
            if n.model == model and n.instances == 0:
                return Placed(n.node_id, "dedicated-smallest-model", 0.0)
        return NotPlaced([{"field": "node",
                           "problem": f"no empty ready node of model {model}"}])
    short: dict[str, int] = {}
    for n in candidates:
        if fits(demand, n.free):
            return Placed(n.node_id, "first-fit", 0.0)
        for d in shortfalls(demand, n.free):
            short[d] = short.get(d, 0) + 1
    return NotPlaced([{"field": d, "problem": f"insufficient on {count} node(s)"}
                      for d, count in short.items()])
