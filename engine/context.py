"""One command's decision in progress, and how handlers refuse."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from engine.world import World


class Rejected(Exception):
    def __init__(self, reasons: list[dict[str, str]]):
        super().__init__("; ".join(f"{r['field']}: {r['problem']}" for r in reasons))
        self.reasons = reasons


def reason(field: str, problem: str) -> dict[str, str]:
    return {"field": field, "problem": problem}


class Context:
    """One command's decision: the events it records and their ids."""

    def __init__(self, world: World):
        self.world = world
        self.events: list[Any] = []
        self.event_ids: list[str] = []

    def touch(self, aggregate: Aggregate, label: str) -> None:
        self.world.add(aggregate)
        for event in aggregate.collect_events():
            self.world.observe(event, aggregate)
            self.events.append(event)
            self.event_ids.append(f"{label}#{event.originator_version}")
