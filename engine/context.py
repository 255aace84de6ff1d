"""One command's decision in progress, and how handlers refuse."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from engine.limits import EngineLimits
from engine.world import World


class Rejected(Exception):
    def __init__(self, reasons: list[dict[str, str]]):
        super().__init__("; ".join(f"{r['field']}: {r['problem']}" for r in reasons))
        self.reasons = reasons


def reason(field: str, problem: str, code: str | None = None) -> dict[str, str]:
    """One reason to refuse; `code` is its stable machine-readable name, if it has one."""
    return {"field": field, "problem": problem, **({"code": code} if code else {})}


class Context:
    """One command's decision: the events it records and their ids."""

    def __init__(self, world: World, limits: EngineLimits | None = None,
                 clock: datetime | None = None):
        self.world = world
        self.limits = limits or EngineLimits()
        self.clock = clock  # the cell's clock before this command (None: a new cell)
        self.events: list[Any] = []
        self.event_ids: list[str] = []

    def touch(self, aggregate: Aggregate, label: str) -> None:
        self.world.add(aggregate)
        for event in aggregate.collect_events():
            self.world.observe(event, aggregate)
            self.events.append(event)
            self.event_ids.append(f"{label}#{event.originator_version}")
