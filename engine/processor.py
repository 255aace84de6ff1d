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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from eventsourcing.persistence import IntegrityError, Tracking

from engine import batch_plan
from engine.application import CisApplication
from engine.domain.cell_log import CellLog
from engine.domain.instance import Instance
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
        parsed_items = [_parse(item) for item in items]
        # Batch placement: the batch's creates planned together (K = placement_window; 1 is
        # one by one). Each create is still decided in order; see engine/batch_plan.py.
        hints = batch_plan.plan_batch(world, [
            (i, p) for i, p in enumerate(parsed_items)
            if isinstance(p, CommandBase) and i not in crashed
            and (role is None or p.role == role)
            and world.recorded(p.principal, p.command_id) is None],
            self.limits.placement_window)
        for index, parsed in enumerate(parsed_items):
            if isinstance(parsed, Outcome):
                outcomes.append(parsed)
                continue
            command = parsed
            if role is not None and command.role != role:
                # Not recorded: a command on the wrong topic must not squat its id.
                outcomes.append(_wrong_topic(command, role).model_copy(
                    update={"principal": command.principal}))
                continue
            digest = content_digest(command)
            key = world.recorded(command.principal, command.command_id)
            if key is not None:
                outcomes.append(_repeat(world, key, command, digest).model_copy(
                    update={"principal": command.principal}))
                continue
            clock = clocks.get(command.cell)
            claimed = command.at
            recorded_before = len(events)
            if command.role == "tenant" and clock is not None and claimed < clock:
                # No tenant acts in the past: a backdated stop must not cancel billed time.
                command = command.model_copy(update={"issued_at": clock})
            if index in crashed:
                outcome = Outcome.rejected(command.command_id, [Reason(
                    field="$", problem=f"internal error: {crashed[index]!r}")])
            elif skew := _too_early(command, clock, self.limits):
                outcome = Outcome.rejected(command.command_id, [skew])
            else:
                armed = batch_plan.arm(world, hints.get(index))
                try:
                    outcome = self._handle(Context(world, self.limits, clock), command, index,
                                           events)
                finally:
                    batch_plan.disarm(armed)
            if command.at != claimed and outcome.status == "accepted":
                outcome = outcome.model_copy(update={"note": "; ".join(filter(None, [
                    outcome.note, f"takes effect at the cell's clock {command.at.isoformat()}, "
                                  "not at its earlier issued_at"]))})
            outcome = outcome.model_copy(update={"principal": command.principal})
            if moves_clock(command, outcome, clock, events[recorded_before:]):
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


# Bookkeeping a report may record without anything having happened: a higher sequence, a run
# reported during a back-off. Neither is evidence that time passed.
NO_CHANGE = (Instance.Sequenced, Instance.RunHeld)


def moves_clock(command: CommandBase, outcome: Outcome, clock: datetime | None,
                recorded: Sequence[Any]) -> bool:
    """A tenant's time is only its claim: it may run ahead by the skew but never moves the
    clock. An agent's report moves it only when it changed something (a stale report is no
    evidence of time passing), an operator's accepted command always. So neither a tenant nor
    a stream of no-op reports can walk a cell's "now" forward for everyone else."""
    if outcome.status != "accepted":
        return False
    if clock is None:
        return True  # a new cell's first accepted command
    if command.role == "tenant":
        return False
    return command.role == "operator" or any(not isinstance(e, NO_CHANGE) for e in recorded)


def content_digest(command: CommandBase) -> str:
    """SHA-256 (its first 128 bits) of a command's canonical content: the same command,
    however spelled (key order, time zone notation, "0.50" or "0.5"), has the same digest."""
    content = command.model_dump()
    try:
        canonical = orjson.dumps(content, default=_canonical, option=orjson.OPT_SORT_KEYS
                                 | orjson.OPT_PASSTHROUGH_DATETIME)
    except orjson.JSONEncodeError:  # a lone surrogate (parsing refuses one; a model may not)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_canonical,
                               ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(canonical).hexdigest()[:32]  # 128 bits: kept for every command


def _canonical(value: Any) -> str:
    """One spelling per meaning for what JSON has no type for: times in UTC, decimals
    normalised, so an honest retry through another serialiser matches."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    raise TypeError(f"no canonical form for {type(value).__name__}")


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
    most = limits.max_tenant_skew_seconds if command.role == "tenant" else limits.max_skew_seconds
    if ahead <= most:
        return None
    field = {"issued_at", "occurred_at"} & type(command).model_fields.keys()
    return Reason(field=next(iter(field), "$"), code="clock_skew",
                  problem=f"{ahead:.0f} s ahead of the cell's clock ({clock.isoformat()}); at "
                          f"most {most} s")


def _parse(item: Item) -> CommandBase | Outcome:
    if isinstance(item, CommandBase):
        return item
    try:
        return parse_command(item)  # type: ignore[return-value]
    except NotACommand as exc:
        return exc.outcome
