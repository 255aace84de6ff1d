"""Turns a batch of raw commands into outcomes and one atomic write.

All events of a batch, the outcome log entries and the batch's source position (a tracking
row) are saved in one transaction. A conflict means another writer touched our cell: the
world is reloaded and the batch decided again; nothing is ever half-saved.

Trust rules decided here, before any handler: a command's type must belong to the role of
the topic it came from (`wrong_topic`); command ids are per principal, and one id names one
command (`command_id_reused`); a command may run ahead of its cell's clock by a bounded skew
(`clock_skew`). A cell's clock is the time of its newest accepted command: rejections never
move it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import IntegrityError, Tracking

from engine.application import CisApplication
from engine.domain.cell_log import CellLog
from engine.handlers import HANDLERS, Context, Rejected
from engine.limits import EngineLimits
from engine.world import World
from schemas.commands import ROLE_TOPICS, CommandBase, Role, Tick
from schemas.limits import TIME_MIN
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
    def __init__(self, app: CisApplication, limits: EngineLimits | None = None):
        self.app = app
        self.limits = limits or EngineLimits()
        self._world: World | None = None

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = self.app.load_world()
        return self._world

    def forget(self) -> None:
        """Drop the in-memory state; the next batch reloads it from the store."""
        self._world = None

    def process(self, items: Sequence[Item], tracking: Tracking | None = None,
                role: Role | None = None) -> list[Outcome]:
        """Decide `items` in order; `role` is the role of the topic they came from (None:
        trusted, any command type)."""
        crashed: dict[int, Exception] = {}
        attempt = 0
        while True:
            try:
                outcomes, events = self._decide(items, crashed, role)
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

    def _decide(self, items: Sequence[Item], crashed: dict[int, Exception],
                role: Role | None) -> tuple[list[Outcome], list[Any]]:
        world = self.world
        outcomes: list[Outcome] = []
        events: list[Any] = []
        handled: dict[str, list[dict[str, Any]]] = defaultdict(list)
        clocks = dict(world.clocks)  # moved by this batch's accepted commands only
        for index, item in enumerate(items):
            parsed = _parse(item)
            if isinstance(parsed, Outcome):
                outcomes.append(parsed)
                continue
            command = parsed
            if role is not None and command.role != role:
                # Not recorded: a command on the wrong topic must not squat its id.
                outcomes.append(_wrong_topic(command, role))
                continue
            digest = content_digest(command)
            key = world.recorded(command.principal, command.command_id)
            if key is not None:
                outcomes.append(_repeat(world, key, command, digest))
                continue
            clock = clocks.get(command.cell)
            if index in crashed:
                outcome = Outcome.rejected(command.command_id, [Reason(
                    field="$", problem=f"internal error: {crashed[index]!r}")])
            elif skew := _too_early(command, clock, self.limits):
                outcome = Outcome.rejected(command.command_id, [skew])
            else:
                outcome = self._handle(Context(world, self.limits, clock), command, index,
                                       events)
            # A tenant's time is only its claim: it may run ahead by the skew, but only the
            # infrastructure (agents' reports) and operators (ticks) move the clock, so no
            # tenant can walk a cell's "now" forward for everyone else.
            if outcome.status == "accepted" and (command.role != "tenant" or clock is None):
                clocks[command.cell] = max(clock or command.at, command.at)
            outcomes.append(outcome)
            entry = {**outcome.model_dump(mode="json", exclude_none=True),
                     "principal": command.principal, "command_type": command.type,
                     "digest": digest}
            world.remember(entry)
            handled[command.cell].append(entry)
        # A cell's log is stamped with its clock: a batch of rejections leaves it where it
        # was. A cell with no clock yet (nothing accepted) takes the newest clock of any
        # cell: never a time a command merely claimed.
        fallback = max(clocks.values(), default=TIME_MIN)
        for cell, records in handled.items():
            at = clocks.get(cell, fallback)
            cell_log = world.cell_log(cell) or CellLog.create(at, cell=cell)
            cell_log.record(records, at)
            ctx = Context(world)
            ctx.touch(cell_log, f"cell-log/{cell}")
            events.extend(ctx.events)
        return outcomes, events

    @staticmethod
    def _handle(ctx: Context, command: CommandBase, index: int, events: list[Any]) -> Outcome:
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


def content_digest(command: CommandBase) -> str:
    """SHA-256 (its first 128 bits) of a command's canonical content: the same command,
    however spelled (key order, time zone notation), has the same digest."""
    content = command.model_dump(mode="json")
    try:
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate (parsing refuses one; a model may not)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(canonical).hexdigest()[:32]  # 128 bits: kept for every command


def _wrong_topic(command: CommandBase, role: Role) -> Outcome:
    return Outcome.rejected(command.command_id, [Reason(
        field="type", code="wrong_topic",
        problem=f"{command.type} belongs on {ROLE_TOPICS[command.role]} ({command.role} "
                f"commands); this topic takes {role} commands only")])


def _repeat(world: World, key: tuple[str, str], command: CommandBase, digest: str) -> Outcome:
    """A command id seen before: the same command answers its recorded outcome again; a
    different one is refused, naming the first."""
    first = world.commands.get(key)
    recorded = world.outcomes[key]
    if first is None or first[1] == digest:  # (entries from before digests: trust the id)
        return Outcome(**recorded)
    first_type, first_digest = first
    return Outcome.rejected(command.command_id, [Reason(
        field="command_id", code="command_id_reused",
        problem=f"{command.principal} already used this id for another command: a "
                f"{first_type} (sha256 {first_digest[:16]}), {recorded['status']}; "
                "use a new command_id")])


def _too_early(command: CommandBase, clock: datetime | None, limits: EngineLimits
               ) -> Reason | None:
    """A command (other than a Tick, which has its own limits) may run ahead of its cell's
    clock by at most `max_skew_seconds`."""
    if clock is None or isinstance(command, Tick):
        return None
    ahead = (command.at - clock).total_seconds()
    if ahead <= limits.max_skew_seconds:
        return None
    field = {"issued_at", "occurred_at"} & type(command).model_fields.keys()
    return Reason(field=next(iter(field), "$"), code="clock_skew",
                  problem=f"{ahead:.0f} s ahead of the cell's clock ({clock.isoformat()}); at "
                          f"most {limits.max_skew_seconds} s")


def _parse(item: Item) -> CommandBase | Outcome:
    if isinstance(item, CommandBase):
        return item
    try:
        return parse_command(item)  # type: ignore[return-value]
    except NotACommand as exc:
        return exc.outcome
