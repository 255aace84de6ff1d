"""The `nodes` read model: per node its pool, model, ASG, state and hold, and what is on it.

Three tables, because an instance's events name its node but not its cell, so they cannot
name a node row to load before the batch (projections/runner.py loads by key first):

- `nodes`: one row per node, from its own events (keyed by the node aggregate).
- `node_instances`: one row per instance that is waiting or on a node — its cell, node and
  demand per dimension; deleted when it leaves its node (or ends without one).
- `node_idle`: per (cell, node), when an instance last left it. Written without being read
  (last in log order wins), so the rows never depend on where a page of the log ends.

Allocation and idle time are summed at query time (adapters/queries.py `nodes`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import BY_AUTOSCALER, Node, node_group
from projections.projection import RowProjection, kind_among
from projections.tables import Key, Rows, Table
from projections.texts import hex_id, iso

# Node states, as the node events name them (engine/domain/node.py).
NODE_STATES = ("requested", "ready", "cordoned", "terminated", "lost")
GONE = frozenset({"terminated", "lost"})

NODES = Table("nodes", ("id",), {
    "id": "text", "cell": "text", "node_id": "text", "pool": "text", "model": "text",
    "asg": "text", "state": "text", "held_by": "text", "reason": "text",
    "capacity": "text", "labels": "text", "requested_at": "text", "ready_at": "text",
    "state_since": "text", "ended_at": "text",
})
NODE_INSTANCES = Table("node_instances", ("id",), {
    "id": "text", "cell": "text", "account": "text", "instance_id": "text",
    "node_id": "text", "state": "text", "demand": "text", "placed_at": "text",
})
NODE_IDLE = Table("node_idle", ("cell", "node_id"), {
    "cell": "text", "node_id": "text", "last_left_at": "text",
})
NODE_EVENT_STATES = ((Node.Ready, "ready"), (Node.Cordoned, "cordoned"),
                     (Node.Uncordoned, "ready"), (Node.Terminated, "terminated"),
                     (Node.Lost, "lost"))
LEAVES_NODE = (Instance.Ended, Instance.Deleted)
# What an event is to this projection, by class (projection.kind_among).
_KIND = kind_among(Node.Requested, Node.Event, Instance.Requested, Instance.Scheduled,
                   *LEAVES_NODE, Instance.Transitioned)
_NODE_STATE = dict(NODE_EVENT_STATES)
_STATE_OF = kind_among(*_NODE_STATE)


def _json(value: Any) -> str:
    return json.dumps(value or {}, sort_keys=True, separators=(",", ":"))


class NodesProjection(RowProjection):
    name = "nodes"
    tables = (NODES, NODE_INSTANCES, NODE_IDLE)
    events = (Node.Event, Instance.Requested, Instance.Transitioned)

    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        kind = _KIND(event)
        if kind is Node.Requested or kind is Node.Event:
            return [(NODES, (hex_id(event),))]
        if kind is not None and kind is not Instance.Requested:  # a transition
            return [(NODE_INSTANCES, (hex_id(event),))]
        return []

    def creates(self, event: Any) -> Iterable[tuple[Table, Key]]:
        kind = _KIND(event)
        if kind is Instance.Requested:
            return [(NODE_INSTANCES, (hex_id(event),))]
        if kind is Node.Requested:
            return [(NODES, (hex_id(event),))]
        return ()

    def apply(self, event: Any, rows: Rows) -> None:
        kind = _KIND(event)
        if kind is Node.Requested or kind is Node.Event:
            self._node(event, rows)
        elif kind is Instance.Requested:
            rows.put(NODE_INSTANCES, {
                "id": hex_id(event), "cell": event.cell, "account": event.account,
                "instance_id": event.name, "node_id": None, "state": "requested",
                # Read defensively: older events, and fields other changes may add.
                "demand": _json(getattr(event, "demand", None)), "placed_at": None,
            })
        elif kind is not None:  # a transition
            self._instance(event, kind, rows)

    def _node(self, event: Any, rows: Rows) -> None:
        key = (hex_id(event),)
        at = iso(event.timestamp)
        if _KIND(event) is Node.Requested:
            rows.put(NODES, {
                "id": key[0], "cell": event.cell, "node_id": event.node_id, "pool": event.pool,
                "model": event.model, "asg": node_group(event.cell, event.pool, event.model),
                "state": "requested", "held_by": None, "reason": event.reason,
                "capacity": _json(event.capacity), "labels": _json(event.labels),
                "requested_at": at, "ready_at": None, "state_since": at, "ended_at": None,
            })
            return
        row = rows.get(NODES, key)
        if row is None:
            return  # an event this projection has no state change for, before creation
        found = _STATE_OF(event)  # the first of NODE_EVENT_STATES it is
        state = _NODE_STATE[found] if found is not None else None
        if state is None:
            return  # a node event of another kind (added later): no state change
        row["state"], row["state_since"] = state, at
        row["reason"] = getattr(event, "reason", None)
        by = getattr(event, "by", None) if state == "cordoned" else None
        # Held: cordoned by someone the autoscaler will not undo (engine/domain/node.py).
        row["held_by"] = by if by not in (None, BY_AUTOSCALER) else None
        if state == "ready" and row["ready_at"] is None:
            row["ready_at"] = at
        if state in GONE:
            row["ended_at"] = at
        rows.put(NODES, row)

    def _instance(self, event: Any, kind: type, rows: Rows) -> None:
        key = (hex_id(event),)
        row = rows.get(NODE_INSTANCES, key)
        if row is None:
            return  # already off its node (e.g. Deleted after Failed)
        if kind in LEAVES_NODE:
            if row["node_id"] is not None:
                rows.put(NODE_IDLE, {"cell": row["cell"], "node_id": row["node_id"],
                                     "last_left_at": iso(event.timestamp)})
            rows.delete(NODE_INSTANCES, key)
            return
        row["state"] = event.new_state()
        if row["node_id"] is not None and (row["state"] not in ON_NODE
                                           or kind is Instance.Scheduled):
            # Back to waiting, or placed again, without ending: it left its node all the same.
            rows.put(NODE_IDLE, {"cell": row["cell"], "node_id": row["node_id"],
                                 "last_left_at": iso(event.timestamp)})
            row["node_id"], row["placed_at"] = None, None
        if kind is Instance.Scheduled:
            row["node_id"], row["placed_at"] = event.node_id, iso(event.timestamp)
            demand = getattr(event, "demand", None)  # should a placement ever restate it
            if demand:
                row["demand"] = _json(demand)
        rows.put(NODE_INSTANCES, row)
