"""Prometheus metrics of `cis serve`: what intake decided, how far behind it is, and what
the world it decides on looks like (counted on the loop's thread, every few seconds)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from adapters.metrics import new_registry
from engine.domain.instance import ON_NODE, PENDING
from schemas.outcomes import Outcome

NODE_STATES = ("requested", "ready", "cordoned", "lost", "terminated")


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        r = self.registry
        self.commands = Counter("cis_commands", "Records decided, by status (accepted, "
                                "rejected, dead_letter) and the role of their topic",
                                ["status", "role"], registry=r)
        self.events = Counter("cis_events_appended", "Events appended by accepted commands",
                              registry=r)
        self.lag = Gauge("cis_intake_lag_records", "Records not yet decided, per topic "
                         "partition", ["topic", "partition"], registry=r)
        self.placed = Gauge("cis_instances_placed", "Instances on a node (scheduled, "
                            "starting, running, restarting)", registry=r)
        self.pending = Gauge("cis_instances_pending", "Instances waiting for a node "
                             "(requested, unschedulable)", registry=r)
        self.nodes = Gauge("cis_nodes", "Nodes by state", ["state"], registry=r)

    def decided(self, outcomes: Iterable[Outcome]) -> None:
        self.events.inc(sum(len(o.events) for o in outcomes if o.status == "accepted"))

    def lag_is(self, lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), n in lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(n)

    def world_is(self, world: Any) -> None:
        # list(): one C-level copy, so a dict changed meanwhile cannot break the count.
        states = Tally(i.state for i in list(world.instances.values()))
        self.placed.set(sum(n for s, n in states.items() if s in ON_NODE))
        self.pending.set(sum(n for s, n in states.items() if s in PENDING))
        nodes = Tally(n.state for n in list(world.nodes.values()))
        for state in {*NODE_STATES, *nodes}:
            self.nodes.labels(state=state).set(nodes.get(state, 0))


class OutboxMetrics:
    """`cis outbox --metrics-port`: what the outbox sent, what it could not, and how far
    it is along the log."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        r = self.registry
        self.sent = Counter("cis_outbox_commands_sent", "VM and Pod commands sent (a resend "
                            "after a crash counts again)", registry=r)
        self.dead_letters = Counter("cis_outbox_dead_letters", "Commands not sent (too large "
                                    "for the broker, or not buildable), announced on "
                                    "<topic>.dlq", registry=r)
        self.position = Gauge("cis_outbox_position", "Log notification id up to which "
                              "commands were sent", registry=r)
        self.log_end = Gauge("cis_outbox_log_end", "Log notification id of the last event "
                             "when last read", registry=r)
