"""One pool's nodes as arrays (capacity, allocation, eligibility) and the index over them.

This is the placement projection: the writer keeps it current by observing every event it
records or replays, so a decision reads exactly what the log implies, and rebuilding it from
the log gives the same arrays. Dedicated pools (one instance per VM of the smallest model
that holds it) keep, per model and label set, the empty eligible nodes instead of an index.

Every lookup goes through an index, node selectors included: nodes are partitioned by their
distinct label set (a pool has a few: its labels plus `model` and `pool`), a selector is the
set of label sets it matches (worked out once per selector and label-set count), and the
`NodeIndex` is asked only about those parts. No node's labels are ever looked at per query;
the one policy the index still decides by a (vectorised, parts-masked) scan is dot_product.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.policies.demand import DIMENSIONS
from engine.policies.node_index import NodeIndex
from engine.policies.placement import Placed, Unplaceable, utilisation_score_row

LabelSet = tuple[tuple[str, str], ...]  # a node's labels, sorted: one index part per distinct set


@dataclass(frozen=True)
class Choice:
    node_id: str
    policy: str
    score: float
    eni_index: int | None = None  # the ENI device index the instance gets on the node

    def attachment(self, network: dict[str, Any]) -> dict[str, Any] | None:
        return None if self.eni_index is None else eni_attachment(self.eni_index, network)


def eni_attachment(eni_index: int, network: dict[str, Any]) -> dict[str, Any]:
    """What the `Scheduled` event records of the instance's network interface: its own ENI
    (device index; 0 is the node's primary ENI), its primary address (IP slot 0), and the
    subnet and security groups the ENI is created in. An ENI is never shared: security groups
    attach to an ENI, and each instance has its own (awsvpc, as Fargate tasks)."""
    return {"eni_index": eni_index, "ip_slot": 0, "vpc": network["vpc"],
            "subnet": network["subnet"],
            "security_groups": list(network.get("security_groups", []))}


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
        # Distinct label sets, in order of first appearance (= index part ids), and the parts
        # each selector matches (valid while the label-set count is the one recorded).
        self.label_sets: list[LabelSet] = []
        self.part_of_labels: dict[LabelSet, int] = {}
        self.selector_parts: dict[LabelSet, tuple[int, tuple[int, ...]]] = {}
        # Dedicated: per (model, part) the empty eligible nodes, each with the sequence number
        # of when it became so; the longest-free matching node is taken (a function of the log).
        self.free_nodes: dict[tuple[str, int], dict[int, int]] = {}
        self.freed = 0  # sequence numbers handed out
        # ENI device indices per node: 1.. handed out in order; released ones are reused
        # lowest first (a heap), so the index an instance gets is a function of the log.
        self.next_eni: list[int] = []
        self.freed_enis: list[list[int]] = []
        # Batch placement (engine/batch_plan.py): (node index, demand) planned for the create
        # being decided; taken by the next choose() if that node still holds that demand.
        self.hint: tuple[int, tuple[int, ...]] | None = None

    # --- kept current from events ----------------------------------------------------

    def add_node(self, node_id: str, model: str, capacity: dict[str, int],
                 labels: dict[str, str]) -> None:
        label_set = tuple(sorted(labels.items()))
        part = self.part_of_labels.get(label_set)
        if part is None:
            part = self.part_of_labels[label_set] = len(self.label_sets)
            self.label_sets.append(label_set)
        i = self.index.add_node([capacity[d] for d in DIMENSIONS], eligible=False, part=part)
        assert i == len(self.node_ids)
        self.node_ids.append(node_id)
        self.position[node_id] = i
        self.models.append(model)
        self.labels.append(labels)
        self.instances.append(0)
        self.takes_work.append(False)
        self.next_eni.append(1)
        self.freed_enis.append([])

    def set_takes_work(self, node_id: str, takes_work: bool) -> None:
        i = self.position[node_id]
        self.takes_work[i] = takes_work
        self._refresh(i)

    def allocate(self, node_id: str, demand: dict[str, int], eni_index: int | None = None
                 ) -> int:
        """Take the demand and an ENI (the recorded one; the lowest free one for events from
        before ENIs were recorded). Answers the ENI's device index."""
        i = self.position[node_id]
        self.index.allocate(i, [demand[d] for d in DIMENSIONS])
        self.instances[i] += 1
        self._refresh(i)
        return self._take_eni(i, eni_index)

    def release(self, node_id: str, demand: dict[str, int], eni_index: int | None = None
                ) -> None:
        i = self.position[node_id]
        self.index.release(i, [demand[d] for d in DIMENSIONS])
        self.instances[i] -= 1
        self._refresh(i)
        if eni_index is not None and eni_index < self.next_eni[i]:
            heapq.heappush(self.freed_enis[i], eni_index)

    def attachment(self, node_id: str, network: dict[str, Any]) -> dict[str, Any]:
        """The ENI an instance placed on `node_id` now gets (for any path that schedules
        without `choose`: pass it to `Instance.schedule(..., attachment=...)`)."""
        return eni_attachment(self.lowest_free_eni(node_id), network)

    def lowest_free_eni(self, node_id: str) -> int:
        i = self.position[node_id]
        freed = self.freed_enis[i]
        return freed[0] if freed else self.next_eni[i]

    def _take_eni(self, i: int, eni_index: int | None) -> int:
        freed = self.freed_enis[i]
        if eni_index is None:
            eni_index = freed[0] if freed else self.next_eni[i]
        if freed and freed[0] == eni_index:
            heapq.heappop(freed)
        elif eni_index >= self.next_eni[i]:
            for skipped in range(self.next_eni[i], eni_index):  # only from foreign choices
                heapq.heappush(freed, skipped)
            self.next_eni[i] = eni_index + 1
        elif eni_index in freed:
            freed.remove(eni_index)
            heapq.heapify(freed)
        return eni_index

    def _refresh(self, i: int) -> None:
        eligible = self.takes_work[i] and (self.kind == "shared" or self.instances[i] == 0)
        self.index.set_eligible(i, eligible)
        if self.kind != "dedicated":
            return
        free = self.free_nodes.setdefault((self.models[i], self.index.part_of(i)), {})
        if eligible:
            if i not in free:
                self.freed += 1
                free[i] = self.freed
        else:
            free.pop(i, None)

    def parts(self, selector: dict[str, str]) -> tuple[int, ...] | None:
        """The index parts (label sets) a node selector matches; None: no selector, all."""
        if not selector:
            return None
        key = tuple(sorted(selector.items()))
        known = self.selector_parts.get(key)
        if known is None or known[0] != len(self.label_sets):
            known = self.selector_parts[key] = (len(self.label_sets), tuple(
                part for part, label_set in enumerate(self.label_sets)
                if _matches(dict(label_set), selector)))
        return known[1]

    # --- queries ---------------------------------------------------------------------

    def choose(self, demand: dict[str, int], selector: dict[str, str], model: str,
               why: bool = True) -> Choice | NoRoom:
        """Where the instance goes, or every reason it fits nowhere (pure read); `why=False`:
        a shared pool's reasons are one constant (for a caller that drops them)."""
        parts = self.parts(selector)
        if self.kind == "dedicated":
            i = self._longest_free(model, parts)
            if i is not None:
                return Choice(self.node_ids[i], "dedicated-smallest-model", 0.0,
                              self.lowest_free_eni(self.node_ids[i]))
            return NoRoom([{"field": "node", "problem": f"no empty ready node of model {model}"
                            + (" matching the node selector" if selector else "")}])
        if self.hint is not None and (hinted := self._hinted(demand, selector)) is not None:
            return hinted
        decision = self.index.place([demand[d] for d in DIMENSIONS], self.policy, parts, why)
        if isinstance(decision, Placed):
            node_id = self.node_ids[decision.node_index]
            return Choice(node_id, decision.policy, decision.score,
                          self.lowest_free_eni(node_id))
        assert isinstance(decision, Unplaceable)
        return NoRoom([{"field": dim, "problem": problem} for dim, problem in decision.reasons])

    def _longest_free(self, model: str, parts: tuple[int, ...] | None) -> int | None:
        """Of the model's empty eligible nodes in these parts, the one free the longest."""
        best: tuple[int, int] | None = None  # (sequence number, node)
        for (of_model, part), free in self.free_nodes.items():
            if of_model != model or not free or (parts is not None and part not in parts):
                continue
            i, seq = next(iter(free.items()))  # insertion order is sequence order
            if best is None or seq < best[0]:
                best = (seq, i)
        return None if best is None else best[1]

    def _hinted(self, demand: dict[str, int], selector: dict[str, str]) -> Choice | None:
        """The batch's planned node, if it still holds exactly this demand (one use)."""
        (i, planned), self.hint = self.hint, None  # type: ignore[misc]
        row = [demand[d] for d in DIMENSIONS]
        if selector or tuple(row) != planned or not self.index.is_eligible(i) or not (
                self.index.fits(i, row)):
            return None
        node_id = self.node_ids[i]
        score = utilisation_score_row(self.index.capacity_of(i), self.index.allocated_of(i),
                                      row)
        return Choice(node_id, f"{self.policy}+batch", score, self.lowest_free_eni(node_id))

    def free(self, node_id: str) -> dict[str, int]:
        free = self.index.free_of(self.position[node_id])
        return dict(zip(DIMENSIONS, free, strict=True))

    def utilisation(self, node_id: str) -> float:
        """The node's highest allocated share over every dimension -- cpu, memory, ENIs and
        pod slots (for scale-in): a node whose ENIs are all taken is full, however idle its
        cpu. (Each share is one correctly rounded division: no summation order to vary.)"""
        i = self.position[node_id]
        cap = self.index.capacity_of(i)
        alloc = self.index.allocated_of(i)
        return max(a / c for a, c in zip(alloc, cap, strict=True))

    def allocation(self, node_id: str) -> dict[str, tuple[int, int]]:
        """(allocated, capacity) per dimension."""
        i = self.position[node_id]
        return dict(zip(DIMENSIONS, zip(self.index.allocated_of(i), self.index.capacity_of(i),
                                        strict=True), strict=True))


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
