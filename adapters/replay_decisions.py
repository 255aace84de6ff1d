"""The recorded decisions re-run from the log and compared, event by event, with what was
stored (`cis audit replay`, docs/design.md §2.11).

Each `CellLog.CommandsHandled` event closes one batch of one cell and keeps the commands its
entries were decided from. Read in log order, each such batch is fed, with the same
boundaries, through a fresh engine on a memory store that started empty; the events it
records must be the events the store holds for that cell since the cell's previous batch:
the same aggregate, version, topic and state bytes, in the same order.

A batch is one cell's: the engine's decisions never read another cell, and batch placement
plans per (cell, pool) (engine/batch_plan.py), so a cell's part of a batch is decided
exactly as the whole batch decided it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import MapperDeserialisationError, Notification
from eventsourcing.utils import get_topic

from adapters.bootstrap import Engine, connect
from engine.domain.cell_log import CellLog
from engine.limits import EngineLimits

HANDLED = get_topic(CellLog.CommandsHandled)
PAGE = 5000
NO_CELL = "?"  # events of an aggregate no creation in the log names a cell for


@dataclass(frozen=True)
class Recorded:
    position: int  # its notification id in the store it was read from
    originator_id: UUID
    version: int
    topic: str
    state: bytes

    @staticmethod
    def of(n: Notification) -> Recorded:
        return Recorded(n.id, n.originator_id, n.originator_version, n.topic,  # type: ignore[arg-type]
                        n.state)

    def same(self, other: Recorded) -> bool:
        return (self.originator_id, self.version, self.topic, self.state) == (
            other.originator_id, other.version, other.topic, other.state)

    def name(self) -> str:
        return f"#{self.position} {self.topic.rsplit(':', 1)[-1]} {self.originator_id} " \
               f"v{self.version}"


@dataclass(frozen=True)
class EventDifference:
    cell: str
    stored: Recorded | None  # None: the re-run recorded an event the store lacks
    replayed: Recorded | None  # None: the store holds an event the re-run did not record
    unreadable: str | None = None  # why the stored event does not decode

    def describe(self) -> str:
        if self.unreadable is not None:
            return f"cell {self.cell}: stored event {self.stored.name()} cannot be read "  \
                   f"({self.unreadable})"  # type: ignore[union-attr]
        if self.replayed is None:
            return f"cell {self.cell}: stored event {self.stored.name()} "  \
                   "is not what the recorded commands give (the re-run recorded nothing here)"  # type: ignore[union-attr]
        if self.stored is None:
            return f"cell {self.cell}: the re-run recorded {self.replayed.name()}, which the " \
                   "store lacks"
        what = _fields_apart(self.stored, self.replayed)
        return f"cell {self.cell}: stored event {self.stored.name()} differs from the " \
               f"re-run's {self.replayed.name()}: {what}"


@dataclass
class DecisionsCompared:
    known_at: datetime | None = None
    batches: int = 0  # batches re-run
    commands: int = 0  # commands re-run
    events: int = 0  # stored events compared
    cells: set[str] = field(default_factory=set)
    not_replayable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    after_known_at: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first: dict[str, EventDifference] = field(default_factory=dict)  # per cell
    more: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per cell

    @property
    def agree(self) -> bool:
        return not self.first

    def differ(self, difference: EventDifference) -> None:
        if difference.cell in self.first:
            self.more[difference.cell] += 1
        else:
            self.first[difference.cell] = difference


def rerun_decisions(engine: Engine, limits: EngineLimits, known_at: datetime | None = None,
                    progress: Callable[[int], None] | None = None, *,
                    into: Engine | None = None,
                    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                    ) -> DecisionsCompared:
    """Re-run every batch recorded (up to `known_at`: a batch whose cell log is stamped no
    later) through a fresh engine with `limits`, comparing the events one by one.

    `into`: the fresh engine (an empty memory store, left open for the caller to read);
    `rewrite`: each kept command as it is re-run (`cis simulate --what-if` changes a policy
    and counts where the decisions part)."""
    result = DecisionsCompared(known_at=known_at)
    app = engine.app
    cell_of: dict[UUID, str] = {}  # aggregate -> its cell, from the creation that names it
    batch: dict[str, list[Recorded]] = defaultdict(list)  # per cell: since its last batch
    stopped: set[str] = set()  # cells not re-run any further (not replayable, or after K)
    with nullcontext(into) if into is not None else connect("memory://") as fresh:
        fresh.processor.limits = limits
        fresh.processor.forget()  # a new world, sized by these limits' retention and skew
        seen = 0  # the fresh store's newest notification compared
        after = 0
        while page := app.recorder.select_notifications(start=after + 1, limit=PAGE):
            for n in page:
                event, unreadable = None, None
                if n.originator_version == 1 or n.topic == HANDLED:
                    try:
                        event = app.mapper.to_domain_event(n)
                    except MapperDeserialisationError as exc:
                        unreadable = str(exc.__cause__ or exc)
                if n.originator_version == 1:
                    cell_of.setdefault(n.originator_id, getattr(event, "cell", NO_CELL))  # type: ignore[arg-type]
                cell = cell_of.get(n.originator_id, NO_CELL)  # type: ignore[arg-type]
                batch[cell].append(Recorded.of(n))
                if n.topic != HANDLED or cell == NO_CELL:
                    continue
                stored = batch.pop(cell)
                if unreadable is not None and cell not in stopped:
                    # The batch's commands are in this event: the cell goes no further.
                    stopped.add(cell)
                    result.events += len(stored)
                    result.differ(EventDifference(cell, stored[-1], None, unreadable))
                    continue
                if cell in stopped:
                    _skipped(result, cell, known_at)
                    continue
                if known_at is not None and event.timestamp > known_at:  # type: ignore[union-attr]
                    stopped.add(cell)  # a cell's stamps never go back: the rest are later
                    _skipped(result, cell, known_at)
                    continue
                commands = [e.get("command") for e in event.outcomes]  # type: ignore[union-attr]
                if not all(commands):
                    # Recorded before commands were kept: the cell cannot be re-run from
                    # here on (its state would have to come from these events untested).
                    stopped.add(cell)
                    result.not_replayable[cell] += 1
                    continue
                fresh.apply([orjson.dumps(rewrite(c) if rewrite else c) for c in commands])
                replayed = [Recorded.of(r) for r in fresh.app.recorder.select_notifications(
                    start=seen + 1, limit=10**9)]
                if replayed:
                    seen = replayed[-1].position
                _compare(result, cell, stored, replayed)
                result.batches += 1
                result.commands += len(commands)
                result.cells.add(cell)
            after = page[-1].id
            if progress:
                progress(len(page))
    for cell, left in batch.items():
        # Events no batch of their cell closes: written by nothing the log records.
        if cell in stopped:
            continue
        for event in left:
            result.events += 1
            result.differ(EventDifference(cell, event, None))
    return result


def _skipped(result: DecisionsCompared, cell: str, known_at: datetime | None) -> None:
    if known_at is not None and cell not in result.not_replayable:
        result.after_known_at[cell] += 1
    else:
        result.not_replayable[cell] += 1


def _compare(result: DecisionsCompared, cell: str, stored: list[Recorded],
             replayed: list[Recorded]) -> None:
    result.events += max(len(stored), len(replayed))
    for i in range(max(len(stored), len(replayed))):
        mine = stored[i] if i < len(stored) else None
        theirs = replayed[i] if i < len(replayed) else None
        if mine is None or theirs is None or not mine.same(theirs):
            result.differ(EventDifference(cell, mine, theirs))


def _fields_apart(stored: Recorded, replayed: Recorded) -> str:
    """What differs, in words: the identity, or the state's fields by name."""
    apart = [name for name, a, b in (
        ("aggregate", stored.originator_id, replayed.originator_id),
        ("version", stored.version, replayed.version),
        ("topic", stored.topic, replayed.topic)) if a != b]
    if stored.state != replayed.state:
        try:
            mine, theirs = orjson.loads(stored.state), orjson.loads(replayed.state)
            keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            apart.append("state (" + ", ".join(keys) + ")" if keys else "state bytes")
        except (orjson.JSONDecodeError, AttributeError):
            apart.append("state bytes")
    return ", ".join(apart)

