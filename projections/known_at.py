"""What the engine knew at a time K (docs/design.md §1.3): the projections folded from the
events recorded up to K only, into a scratch view, so the same queries answer from it.

"Recorded at" is the engine's own clock, not the wall clock: each batch ends with one
`CellLog.CommandsHandled` per cell it touched, stamped with the cell's clock and stored after
that batch's events for the cell. So a cell's events known at K are those before its last
stamp <= K. That is deterministic and replayable (wall-clock commit times would not be), and
a cell's clock never goes back, so once a stamp is past K the cell has nothing more to add.

A time cannot tell apart batches stamped with the same clock: a late report moves no clock,
so its batch carries the stamp of the batch before it. A log position can: K may also be
the notification id an answer was given at (every batch is stored whole, so the events up
to a stamp at or before it are exactly what was recorded then).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from engine.domain.cell_log import CellLog
from projections.projection import RowProjection
from projections.runner import PAGE, catch_up
from projections.views.memory import MemoryView


class Log(Protocol):
    """The event log, as `CisApplication` reads it."""

    def page(self, after: int, limit: int = ..., *, stop: int | None = None
             ) -> list[tuple[int, Any]]: ...


@dataclass
class Known:
    """A scratch view of the projections as they stood, and what each cell's clock was.

    It reads like an engine (`view`, `app`), so `adapters/queries.py` answers from it."""

    view: Any  # a MemoryView unless fold_known was given one
    app: Any  # the live log (explain reads it to find what a line was billed on)
    clocks: dict[str, datetime] = field(default_factory=dict)  # cell -> its last stamp
    positions: dict[str, int] = field(default_factory=dict)  # cell -> that stamp's id
    events: int = 0  # events folded


@dataclass
class _Released:
    """Events let through, handed to `catch_up` as a log of its own (ids renumbered: a
    cell's events are let through at its stamp, so ids from the real log would go back)."""

    chunk: list[Any] = field(default_factory=list)
    next_id: int = 1

    def page(self, after: int, limit: int = PAGE, stop: int | None = None
             ) -> list[tuple[int, Any]]:
        out, self.chunk = self.chunk, []
        first, self.next_id = self.next_id, self.next_id + len(out)
        return list(enumerate(out, first))


def fold_known(log: Log, projections: Sequence[RowProjection],
               known_at: datetime | int | None,
               cells: Collection[str] | None = None,
               until: Callable[[Any], bool] | None = None,
               progress: Callable[[int], None] | None = None,
               view: Any | None = None) -> Known:
    """Fold `projections` from the events recorded up to `known_at` — a time (stamps at or
    before it), a log position (stamps at or before it), or None (all) — into a new
    in-memory view.

    `cells` keeps only those cells' events (and stops reading once all of them are done);
    `until`, if given, ends a cell at the first of its events it holds true for (that event
    and the cell's events before it in the log are kept): e.g. a period's close. `view` is
    where to fold (an empty view of any store, e.g. a scratch schema); default in memory.
    `progress` is called with each page of the log read."""
    view = view if view is not None else MemoryView()
    view.create([t for p in projections for t in p.tables])
    known = Known(view, log)
    cell_of: dict[UUID, str] = {}
    pending: dict[str, list[Any]] = {}
    done: set[str] = set()
    released = _Released()

    def flush() -> None:
        if released.chunk:
            known.events += len(released.chunk)
            catch_up(released, projections, view)  # type: ignore[arg-type]

    if cells is not None and not cells:
        return known  # no cell asked for: nothing to read
    by_time = isinstance(known_at, datetime)
    after, last = 0, known_at if isinstance(known_at, int) else None
    while (last is None or after < last) and (page := log.page(after, PAGE, stop=last)):
        after = page[-1][0]
        if progress:
            progress(len(page))
        for notification_id, event in page:
            cell = cell_of.get(event.originator_id)
            if cell is None:
                cell = cell_of[event.originator_id] = event.cell  # every creation names it
            if cell in done or (cells is not None and cell not in cells):
                continue
            mine = pending.setdefault(cell, [])
            if isinstance(event, CellLog.CommandsHandled):
                if by_time and event.timestamp > known_at:  # type: ignore[operator]
                    done.add(cell)  # its clock only goes forward
                    pending.pop(cell)
                    continue
                known.clocks[cell], known.positions[cell] = event.timestamp, notification_id
            mine.append(event)
            if until is not None and until(event):
                done.add(cell)
            elif not isinstance(event, CellLog.CommandsHandled) and known_at is not None:
                continue  # known only once its batch's stamp is
            released.chunk += pending.pop(cell)
        if len(released.chunk) >= PAGE:
            flush()
        if cells is not None and done >= set(cells):
            break
    if known_at is None:  # nothing left to wait for: what is recorded is known
        for events in pending.values():
            released.chunk += events
    flush()
    return known
