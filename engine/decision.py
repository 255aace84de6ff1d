"""What deciding one command gives: a value, never an exception (docs/design.md §7.2).

A handler is `decide(draft, command) -> Decision`. The draft is the cell's state as this
command's decision has evolved it so far (each event recorded is folded in at once, through
the same `observe` that replay uses, so a handler placing several instances sees its own
earlier placements). The decision is either the events to record, or a refusal carrying
every reason. The processor records an accepted decision's events; a refusal records none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from engine.limits import EngineLimits
from engine.world import World

Reasons = tuple[dict[str, str], ...]


def reason(field: str, problem: str, code: str | None = None) -> dict[str, str]:
    """One reason to refuse; `code` is its stable machine-readable name, if it has one."""
    return {"field": field, "problem": problem, **({"code": code} if code else {})}


@dataclass(frozen=True, slots=True)
class Accepted:
    """The events the command decided (none: an accepted no-op), their ids, and a note."""

    events: tuple[Any, ...] = ()
    event_ids: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Every reason the command is refused; nothing is recorded."""

    reasons: Reasons


Decision = Accepted | Refused


def refused(*reasons: dict[str, str]) -> Refused:
    return Refused(tuple(reasons))


@dataclass(eq=False)
class Draft:
    """One command's decision in progress: the state it reads (and evolves by each event it
    records), the limits it is decided under and its cell's clock before it."""

    world: World
    limits: EngineLimits = field(default_factory=EngineLimits)
    clock: datetime | None = None  # the cell's clock before this command (None: a new cell)
    events: list[Any] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def touch(self, aggregate: Aggregate, label: str) -> None:
        """Record the aggregate's new events and fold them into the state."""
        self.world.add(aggregate)
        for event in aggregate.collect_events():
            self.world.observe(event, aggregate)
            self.events.append(event)
            self.event_ids.append(f"{label}#{event.originator_version}")

    def accept(self, note: str | None = None) -> Accepted:
        return Accepted(tuple(self.events), tuple(self.event_ids), note)
