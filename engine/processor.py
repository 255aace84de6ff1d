"""Turns a batch of raw commands into outcomes and one atomic write.

All events of a batch, the outcome log entries and the batch's source position (a tracking
row) are saved in one transaction. A conflict means another writer touched our cell: the
world is reloaded and the batch decided again; nothing is ever half-saved.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking

from engine.application import CisApplication
from engine.domain.cell_log import CellLog
from engine.handlers import HANDLERS, Context, Rejected
from engine.world import World
from schemas.commands import CommandBase
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command

log = logging.getLogger(__name__)

Item = bytes | str | CommandBase
CONFLICT_RETRIES = 3


class HandlerCrashed(Exception):
    def __init__(self, index: int, error: Exception):
        super().__init__(f"command {index} crashed the handler: {error!r}")
        self.index = index
        self.error = error


class CommandProcessor:
    def __init__(self, app: CisApplication):
        self.app = app
        self._world: World | None = None

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = self.app.load_world()
        return self._world

    def forget(self) -> None:
        """Drop the in-memory state; the next batch reloads it from the store."""
        self._world = None

    def process(self, items: Sequence[Item], tracking: Tracking | None = None) -> list[Outcome]:
        crashed: dict[int, Exception] = {}
        attempt = 0
        while True:
            try:
                outcomes, events = self._decide(items, crashed)
                self.app.record(events, tracking)
                return outcomes
            except HandlerCrashed as exc:
                # A bug must not stop the stream: reject that command, decide the rest again.
                log.exception("handler crashed; rejecting command %d", exc.index)
                crashed[exc.index] = exc.error
                self.forget()
            except IntegrityError:
                self.forget()
                attempt += 1
                if attempt > CONFLICT_RETRIES:
                    raise
                log.warning("write conflict (another writer?); retrying batch, attempt %d",
                            attempt)
            except BaseException:
                self.forget()
                raise

    def _decide(self, items: Sequence[Item], crashed: dict[int, Exception]
                ) -> tuple[list[Outcome], list[Any]]:
        world = self.world
        outcomes: list[Outcome] = []
        events: list[Any] = []
        handled: dict[str, list[dict[str, Any]]] = defaultdict(list)
        latest: dict[str, datetime] = {}
        for index, item in enumerate(items):
            parsed = _parse(item)
            if isinstance(parsed, Outcome):
                outcomes.append(parsed)
                continue
            command = parsed
            recorded = world.outcomes.get(command.command_id)
            if recorded is not None:
                outcomes.append(Outcome(**recorded))
                continue
            if index in crashed:
                outcome = Outcome.rejected(command.command_id, [Reason(
                    field="$", problem=f"internal error: {crashed[index]!r}")])
            else:
                outcome = self._handle(world, command, index, events)
            outcomes.append(outcome)
            record = outcome.model_dump(mode="json", exclude_none=True)
            world.outcomes[command.command_id] = record
            handled[command.cell].append(record)
            latest[command.cell] = max(latest.get(command.cell, command.at), command.at)
        for cell, records in handled.items():
            cell_log = world.cell_log(cell) or CellLog.create(latest[cell], cell=cell)
            cell_log.record(records, latest[cell])
            ctx = Context(world)
            ctx.touch(cell_log, f"cell-log/{cell}")
            events.extend(ctx.events)
        return outcomes, events

    @staticmethod
    def _handle(world: World, command: CommandBase, index: int, events: list[Any]) -> Outcome:
        ctx = Context(world)
        try:
            note = HANDLERS[type(command)](ctx, command)
        except Rejected as rejected:
            if ctx.events:
                error = RuntimeError("rejected after recording events")
                raise HandlerCrashed(index, error) from rejected
            return Outcome.rejected(command.command_id, [Reason(**r) for r in rejected.reasons])
        except Exception as error:
            raise HandlerCrashed(index, error) from error
        events.extend(ctx.events)
        return Outcome(command_id=command.command_id, status="accepted",
                       events=ctx.event_ids, note=note)


def _parse(item: Item) -> CommandBase | Outcome:
    if isinstance(item, CommandBase):
        return item
    try:
        return parse_command(item)  # type: ignore[return-value]
    except NotACommand as exc:
        return exc.outcome
