"""One pool's nodes as arrays (capacity, allocation, eligibility) and the index over them.

This is the placement projection: the writer keeps it current by observing every event it
records or replays, so a decision reads exactly what the log implies, and rebuilding it from
the log gives the same arrays. Dedicated pools (one instance per VM of the smallest model
that holds it) keep, per model, the set of empty eligible nodes instead of an index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.policies.demand import DIMENSIONS
from engine.policies.node_index import NodeIndex
from engine.policies.placement import POLICIES, Placed, Unplaceable


@dataclass(frozen=True)
class Choice:
    node_id: str
    policy: str
    score: float


@dataclass(frozen=True)
class NoRoom:
    reasons: list[dict[str, str]]


class PoolPlacement:
    def __init__(self, kind: str, policy: str):
        self.kind = kind
        self.policy = policy
        empty = np.zeros((0, len(DIMENSIONS)), dtype=np.int64)
        self.index = NodeIndex(empty, empty, np.zeros(0, dtype=bool), DIMENSIONS)
        self.node_ids: list[str] = []
        self.position: dict[str, int] = {}
        self.models: list[str] = []
        self.labels: list[dict[str, str]] = []
        self.instances: list[int] = []
        self.takes_work: list[bool] = []  # ready and not cordoned
        self.free_by_model: dict[str, dict[int, None]] = {}  # dedicated: empty eligible nodes

    # --- kept current from events ----------------------------------------------------

    def add_node(self, node_id: str, model: str, capacity: dict[str, int],
                 labels: dict[str, str]) -> None:
        i = self.index.add_node([capacity[d] for d in DIMENSIONS], eligible=False)
        assert i == len(self.node_ids)
        self.node_ids.append(node_id)
        self.position[node_id] = i
        self.models.append(model)
        self.labels.append(labels)
        self.instances.append(0)
        self.takes_work.append(False)

    def set_takes_work(self, node_id: str, takes_work: bool) -> None:
        i = self.position[node_id]
        self.takes_work[i] = takes_work
        self._refresh(i)

    def allocate(self, node_id: str, demand: dict[str, int]) -> None:
        i = self.position[node_id]
        self.index.allocate(i, [demand[d] for d in DIMENSIONS])
        self.instances[i] += 1
        self._refresh(i)

    def release(self, node_id: str, demand: dict[str, int]) -> None:
        i = self.position[node_id]
        self.index.release(i, [demand[d] for d in DIMENSIONS])
        self.instances[i] -= 1
        self._refresh(i)

    def _refresh(self, i: int) -> None:
        eligible = self.takes_work[i] and (self.kind == "shared" or self.instances[i] == 0)
        self.index.set_eligible(i, eligible)
        free = self.free_by_model.setdefault(self.models[i], {})
        if eligible:
            free[i] = None
        else:
            free.pop(i, None)

    # --- queries ---------------------------------------------------------------------

    def choose(self, demand: dict[str, int], selector: dict[str, str], model: str
               ) -> Choice | NoRoom:
        """Where the instance goes, or every reason it fits nowhere (pure read)."""
        if self.kind == "dedicated":
            for i in self.free_by_model.get(model, {}):
                if _matches(self.labels[i], selector):
                    return Choice(self.node_ids[i], "dedicated-smallest-model", 0.0)
            return NoRoom([{"field": "node", "problem": f"no empty ready node of model {model}"
                            + (" matching the node selector" if selector else "")}])
        row = np.array([demand[d] for d in DIMENSIONS], dtype=np.int64)
        if selector:
            mask = self.index.eligible & np.array(
                [_matches(labels, selector) for labels in self.labels], dtype=bool)
            decision = POLICIES[self.policy](self.index.capacity, self.index.allocated, mask,
                                             row, DIMENSIONS)
        else:
            decision = self.index.place(row, self.policy)
        if isinstance(decision, Placed):
            return Choice(self.node_ids[decision.node_index], decision.policy, decision.score)
        assert isinstance(decision, Unplaceable)
        return NoRoom([{"field": dim, "problem": problem} for dim, problem in decision.reasons])

    def free(self, node_id: str) -> dict[str, int]:
        i = self.position[node_id]
        free = self.index.capacity[i] - self.index.allocated[i]
        return {d: int(free[k]) for k, d in enumerate(DIMENSIONS)}

    def utilisation(self, node_id: str) -> float:
        """The node's highest allocated share over cpu and memory (for scale-in)."""
        i = self.position[node_id]
        cap = self.index.capacity[i]
        alloc = self.index.allocated[i]
        return float(max(alloc[0] / cap[0], alloc[1] / cap[1]))


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
