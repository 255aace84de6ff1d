"""The `instances` read model: state, node and timestamps per instance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.domain.instance import Instance
from projections.projection import RowProjection, kind_among
from projections.tables import Key, Rows, Table
from projections.texts import hex_id, iso

INSTANCES = Table("instances", ("id",), {
    "id": "text", "cell": "text", "instance_id": "text", "account": "text", "pool": "text",
    "state": "text", "node_id": "text", "runtime": "text", "restart_policy": "text",
    "requested_vcpu": "numeric", "requested_memory_gib": "numeric",
    "billed_vcpu": "numeric", "billed_memory_gib": "numeric", "restarts": "int",
    "created_at": "text", "state_since": "text", "ended_at": "text", "reason": "text",
})


# What an event is to this projection, by class (projection.kind_among).
_KIND = kind_among(Instance.Requested, Instance.Scheduled, Instance.Restarting, Instance.Ended,
                   Instance.Transitioned, Instance.ContainerCompleted)
_ROW = kind_among(Instance.Event)


class InstancesProjection(RowProjection):
    name = "instances"
    tables = (INSTANCES,)
    # (A ContainerCompleted or Sequenced changes no column: not read.)
    events = (Instance.Requested, Instance.Transitioned)

    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if _ROW(event) is not None:
            return [(INSTANCES, (hex_id(event),))]
        return []

    def creates(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if _KIND(event) is Instance.Requested:
            return [(INSTANCES, (hex_id(event),))]
        return ()

    def apply(self, event: Any, rows: Rows) -> None:
        kind = _KIND(event)
        key = (hex_id(event),)
        if kind is Instance.Requested:
            rows.put(INSTANCES, {
                "id": key[0], "cell": event.cell, "instance_id": event.name,
                "account": event.account, "pool": event.pool, "state": "requested",
                "node_id": None, "runtime": event.runtime,
                "restart_policy": event.restart_policy,
                "requested_vcpu": str(event.requested_vcpu),
                "requested_memory_gib": str(event.requested_memory_gib),
                "billed_vcpu": str(event.billed_vcpu),
                "billed_memory_gib": str(event.billed_memory_gib), "restarts": 0,
                "created_at": iso(event.timestamp), "state_since": iso(event.timestamp),
                "ended_at": None, "reason": None,
            })
            return
        if kind is None:
            return
        row = rows.get(INSTANCES, key)
        assert row is not None, f"instance event before its creation: {event!r}"
        if kind is not Instance.ContainerCompleted:  # a transition
            row["state"] = event.new_state()
            row["state_since"] = iso(event.timestamp)
        if kind is Instance.Scheduled:
            row["node_id"] = event.node_id
        elif kind is Instance.Restarting:
            row["restarts"] = event.restarts
        elif kind is Instance.Ended:
            row["ended_at"] = iso(event.timestamp)
            row["reason"] = event.reason
        rows.put(INSTANCES, row)
