"""What a simulated run cost and earned, read from the engine's own events as they are stored.

Every figure is a function of the events (so of the seed): nodes paid from their request to
their termination or loss, capacity, what placement allocated (billed spec plus runtime
overhead) and what was billed, over time; pending latencies; how instances ended.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from engine.domain.instance import BILLED, ON_NODE, PENDING, Instance
from engine.domain.node import Node

# The series kept over time; each changes by steps at event times.
SERIES = ("nodes_paid", "nodes_ready", "cap_cpu", "cap_mem", "alloc_cpu", "alloc_mem",
          "billed_cpu", "billed_mem", "pending", "running")
_INDEX = {name: k for k, name in enumerate(SERIES)}


@dataclass(slots=True)
class _Inst:
    requested_at: datetime
    demand: tuple[int, int]  # millicores, MiB taken from a node (billed spec + overhead)
    billed: tuple[int, int]  # millicores, MiB of the billed spec
    state: str = "requested"
    scheduled: bool = False
    running: bool = False


@dataclass(slots=True)
class _Node:
    requested_at: datetime
    pool: str
    model: str
    capacity: tuple[int, int]
    ready: bool = False
    ended_at: datetime | None = None


@dataclass
class Collector:
    """Fed every stored event once (`observe`), in log order."""

    start: datetime
    prices: dict[tuple[str, str], Decimal]  # (pool, model) -> price per hour
    # Every step of a series: when (s from start), which series, by how much. Arrays, not
    # tuples: a day of 500,000 launches makes millions of steps.
    _at: array[float] = field(default_factory=lambda: array("d"))
    _which: array[int] = field(default_factory=lambda: array("b"))
    _change: array[float] = field(default_factory=lambda: array("d"))
    _instances: dict[Any, _Inst] = field(default_factory=dict)
    _nodes: dict[Any, _Node] = field(default_factory=dict)
    to_scheduled: list[float] = field(default_factory=list)
    to_running: list[float] = field(default_factory=list)
    ends: Counter[str] = field(default_factory=Counter)
    node_events: Counter[str] = field(default_factory=Counter)
    finished_nodes: list[_Node] = field(default_factory=list)

    def _step(self, at: datetime, series: str, change: float) -> None:
        self._at.append((at - self.start).total_seconds())
        self._which.append(_INDEX[series])
        self._change.append(change)

    def observe(self, event: Any) -> None:
        if isinstance(event, Instance.Requested):
            demand = event.demand
            self._instances[event.originator_id] = _Inst(
                event.timestamp, (demand["millicores"], demand["memory_mib"]),
                (int(event.billed_vcpu * 1000), int(event.billed_memory_gib * 1024)))
            self._step(event.timestamp, "pending", 1)
        elif isinstance(event, Instance.Transitioned):
            self._transition(event)
        elif isinstance(event, Node.Event):
            self._node(event)

    def _transition(self, event: Any) -> None:
        inst = self._instances.get(event.originator_id)
        if inst is None:
            return
        at, old, new = event.timestamp, inst.state, event.new_state()
        if isinstance(event, Instance.Scheduled) and not inst.scheduled:
            inst.scheduled = True
            self.to_scheduled.append((at - inst.requested_at).total_seconds())
        if isinstance(event, Instance.Running) and not inst.running:
            inst.running = True
            self.to_running.append((at - inst.requested_at).total_seconds())
        for states, names, values in ((PENDING, ("pending",), (1,)),
                                      (ON_NODE, ("alloc_cpu", "alloc_mem"), inst.demand),
                                      (BILLED, ("billed_cpu", "billed_mem"), inst.billed),
                                      ({"running"}, ("running",), (1,))):
            change = (new in states) - (old in states)
            if change:
                for name, value in zip(names, values, strict=True):
                    self._step(at, name, change * value)
        inst.state = new
        if isinstance(event, Instance.Ended):
            self.ends[new] += 1
        if new == "deleted":
            del self._instances[event.originator_id]  # what is over is only counted

    def _node(self, event: Any) -> None:
        self.node_events[type(event).__name__] += 1
        if isinstance(event, Node.Requested):
            capacity = (event.capacity["millicores"], event.capacity["memory_mib"])
            self._nodes[event.originator_id] = _Node(event.timestamp, event.pool, event.model,
                                                     capacity)
            self._step(event.timestamp, "nodes_paid", 1)
            return
        node = self._nodes.get(event.originator_id)
        if node is None or node.ended_at is not None:
            return
        at = event.timestamp
        if isinstance(event, Node.Ready) and not node.ready:
            node.ready = True
            self._ready(at, node, 1)
        elif isinstance(event, Node.Terminated | Node.Lost):
            if node.ready:
                self._ready(at, node, -1)
            node.ended_at = at
            self._step(at, "nodes_paid", -1)
            self.finished_nodes.append(self._nodes.pop(event.originator_id))

    def _ready(self, at: datetime, node: _Node, sign: int) -> None:
        self._step(at, "nodes_ready", sign)
        self._step(at, "cap_cpu", sign * node.capacity[0])
        self._step(at, "cap_mem", sign * node.capacity[1])

    # --- the figures --------------------------------------------------------------------

    def steps(self) -> Steps:
        return Steps(self._at, self._which, self._change)

    def node_hours(self, until: datetime) -> dict[tuple[str, str], float]:
        hours: Counter[tuple[str, str]] = Counter()
        for node in [*self.finished_nodes, *self._nodes.values()]:
            end = min(node.ended_at or until, until)
            hours[(node.pool, node.model)] += max(0.0, (end - node.requested_at)
                                                  .total_seconds()) / 3600
        return dict(hours)


@dataclass(frozen=True)
class Steps:
    """Every step of the series: when (s from start), which series (`SERIES` index), by how
    much. The steps of several cells concatenated are the steps of the region."""

    at: array[float]
    which: array[int]
    change: array[float]

    @staticmethod
    def joined(parts: list[Steps]) -> Steps:
        if len(parts) == 1:
            return parts[0]
        at, which, change = array("d"), array("b"), array("d")
        for part in parts:
            at.extend(part.at)
            which.extend(part.which)
            change.extend(part.change)
        return Steps(at, which, change)


def series(steps: Steps, until_s: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every series as steps: times (s from start) and its value from each time on."""
    if not steps.at:
        return np.zeros(1), {name: np.zeros(1) for name in SERIES}
    times, row = np.unique(np.clip(np.frombuffer(steps.at), 0, until_s), return_inverse=True)
    values = np.zeros((times.size, len(SERIES)))
    np.add.at(values, (row, np.frombuffer(steps.which, dtype=np.int8)),
              np.frombuffer(steps.change))
    levels = np.cumsum(values, axis=0)
    return times, {name: levels[:, k] for k, name in enumerate(SERIES)}


def integral(times: np.ndarray, level: np.ndarray, until_s: float) -> float:
    """The area under a step series from 0 to `until_s` (value x seconds)."""
    widths = np.diff(np.append(times, until_s))
    return float(np.sum(level * np.clip(widths, 0, None)))


def cost(node_hours: dict[tuple[str, str], float], prices: dict[tuple[str, str], Decimal]
         ) -> Decimal:
    """Node-hours x the model's price per hour, over every (pool, model)."""
    return sum((Decimal(str(round(h, 6))) * prices.get(key, Decimal(0))
                for key, h in sorted(node_hours.items())), Decimal(0))
