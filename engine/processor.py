"""Turns a batch of raw commands into outcomes and one atomic write.

All events of a batch, the outcome log entries and the batch's source position (a tracking
row) are saved in one transaction. A conflict means another writer touched our cell: the
world is reloaded and the batch decided again; nothing is ever half-saved.

Trust rules decided here, before any handler: a command's type must belong to the role of
the topic it came from (`wrong_topic`); command ids are per principal, and one id names one
command (`command_id_reused`); a command may run ahead of its cell's clock by a bounded skew
(`clock_skew`), and an agent's report also ahead of the newest time an operator vouched for
(`clock_unvouched`). A cell's clock is the time of its newest accepted command: rejections
never move it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from engine import batch_plan
from engine.application import CisApplication
from engine.decision import Draft, Refused
from engine.domain.cell_log import CellLog, kept_command
from engine.domain.instance import Instance
from engine.domain.node import Node
from engine.handlers import HANDLERS
from engine.limits import EngineLimits
from engine.snapshots import SnapshotStore, freeze, thaw
from engine.world import CellState, OutcomeKey, World
from schemas.commands import ROLE_TOPICS, CommandBase, Role, Tick
from schemas.limits import TIME_MIN
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command

log = logging.getLogger(__name__)

Item = bytes | str | CommandBase
CONFLICT_RETRIES = 3
# A cell's state is snapshotted after this many of its events (CIS_SNAPSHOT_EVERY).
SNAPSHOT_EVERY = 100_000
CELL_OPENED = (get_topic(CellLog.Opened),)


@dataclass(frozen=True)
class Crashed:
    """A handler's bug on command `index`: the batch's state is dropped and the batch
    decided again, that command rejected (a bug must not stop the stream)."""

    index: int
    error: Exception


class CommandProcessor:
    """Decides batches against the state of the cells they name, loading each cell on first
    use (newest snapshot + the log's tail) and snapshotting it every `snapshot_every` of its
    events (docs/design.md §7)."""

    def __init__(self, app: CisApplication, limits: EngineLimits | None = None,
                 snapshots: SnapshotStore | None = None, snapshot_every: int = SNAPSHOT_EVERY,
                 cell_directory: Callable[[], Iterable[str]] | None = None,
                 existing: Callable[[Collection[UUID]], set[UUID]] | None = None):
        self.app = app
        self.limits = limits or EngineLimits()
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.cell_directory = cell_directory  # every cell opened in the store (None: scan)
        self.existing = existing  # which aggregates have events (None: read each one)
        self._world = self._new_world()
        self.position: dict[str, int] = {}  # per loaded cell: newest notification folded in
        self.unsaved: dict[str, int] = {}  # per loaded cell: events since its last snapshot
        self._warmed = False

    def _new_world(self) -> World:
        world = World(self.limits.command_id_retention_seconds + max(
            self.limits.max_skew_seconds, self.limits.max_tenant_skew_seconds))
        world.fetch = self._fetch
        world.read_event = self._read_event
        return world

    def _read_event(self, aggregate_id: UUID, version: int) -> Any:
        return next(iter(self.app.events.get(aggregate_id, gt=version - 1, lte=version)), None)

    def _fetch(self, aggregate_id: UUID) -> Any:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    @property
    def world(self) -> World:
        """Every cell's state (tools and tests look at it whole; deciding loads only the
        cells a batch names)."""
        if not self._warmed:
            self.warm()
        return self._world

    @property
    def loaded_world(self) -> World:
        """The cells loaded so far (what a writer holds), loading nothing."""
        return self._world

    def cells(self) -> frozenset[str]:
        """Every cell opened in the store, and every loaded one."""
        if self.cell_directory is not None:
            found = set(self.cell_directory())
        else:
            found = {getattr(e, "cell", "") for _, e in self.app.read(topics=CELL_OPENED)}
        return frozenset(found | self._world.parts.keys())

    def has_log(self, cell: str) -> bool:
        """Whether a loaded cell has a command log (has ever handled a command)."""
        return self._world.cell_log(cell) is not None

    def warm(self, cells: Iterable[str] | None = None) -> None:
        """Load these cells now (None: every cell in the store)."""
        if cells is None:
            self._warmed = True
        self._load(set(self.cells() if cells is None else cells) - self.loaded)

    @property
    def loaded(self) -> set[str]:
        return set(self.position)

    def forget(self, cells: Iterable[str] | None = None) -> None:
        """Drop these cells' state (None: all); the next batch naming one reloads it."""
        if cells is None:
            self._world = self._new_world()
            self.position.clear()
            self.unsaved.clear()
            self._warmed = False
            return
        for cell in cells:
            self._world.detach(cell)
            self.position.pop(cell, None)
            self.unsaved.pop(cell, None)
            self._warmed = False

    def _load(self, cells: set[str]) -> None:
        """Each cell from its newest usable snapshot, then the log after it; one read of the
        log from the oldest start serves them all."""
        if not cells:
            return
        started = time.perf_counter()
        world, start = self._world, {}
        found = {c: self.snapshots.load(c) for c in sorted(cells)} if self.snapshots else {}
        states = {c: thaw(s, world.keep_seconds) for c, s in found.items() if s is not None}
        # A cell the store has never seen starts empty, at the log's end: a command naming a
        # new (or made-up) cell must not cost a read of the whole log.
        missing = {c for c in cells if states.get(c) is None}
        unknown = missing - set(self.cells()) if missing else set()
        end = (self.app.recorder.max_notification_id() or 0) if unknown else 0
        for cell in sorted(cells):
            state = states.get(cell)
            if state is not None:
                world.attach(state)
                start[cell] = found[cell].position  # type: ignore[union-attr]
            else:
                world.attach(CellState(cell, world.keep_seconds))
                start[cell] = end if cell in unknown else 0
        waiting = sorted(start.items(), key=lambda item: item[1])
        active: set[str] = set()
        last = after = waiting[0][1]
        replayed = 0
        for notification_id, event in self.app.read(after):
            while waiting and waiting[0][1] < notification_id:
                active.add(waiting.pop(0)[0])
            replayed += world.replay(event, active)
            last = notification_id
        # Read after the tail: a head newer than the state means another writer's batch,
        # and then our next write conflicts on the cell log's version (§2.6).
        for cell, head in self.app.chain_heads(cells, after).items():
            world.parts[cell].chain_head = head
        for cell in cells:
            self.position[cell] = max(start[cell], last)
            self.unsaved[cell] = 0
            world.evict(cell)
        log.info("loaded %d cell(s): %d snapshot(s), %d event(s) of the log after %d, %.3f s",
                 len(cells), sum(1 for p in start.values() if p), replayed, after,
                 time.perf_counter() - started)

    def save_snapshots(self, cells: Iterable[str] | None = None) -> int:
        """Snapshot these loaded cells (None: every one with events since its last)."""
        if self.snapshots is None:
            return 0
        chosen = [c for c in self.unsaved if self.unsaved[c]] if cells is None else list(cells)
        for cell in chosen:
            state = self._world.parts.get(cell)
            if state is None:
                continue
            self._world.evict(cell)
            self.snapshots.save(freeze(state, self.position[cell]))
            self.unsaved[cell] = 0
        return len(chosen)

    def process(self, items: Sequence[Item], tracking: Tracking | None = None,
                role: Role | None = None) -> list[Outcome]:
        """Decide `items` in order; `role` is the role of the topic they came from (None:
        trusted, any command type)."""
        crashed: dict[int, Exception] = {}
        attempt = 0
        parsed = [_parse(item) for item in items]
        cells = {p.cell for p in parsed if isinstance(p, CommandBase)}
        while True:
            try:
                self._load(cells - self.loaded)
                self._look_up_evicted(parsed)
                decided = self._decide(parsed, crashed, role)
                if isinstance(decided, Crashed):
                    log.error("handler crashed; rejecting command %d", decided.index,
                              exc_info=decided.error)
                    crashed[decided.index] = decided.error
                    self.forget(cells)
                    continue
                outcomes, events = decided
                self._recorded(events, self._record(events, tracking))
                return outcomes
            except IntegrityError:
                self.forget(cells)
                attempt += 1
                if attempt > CONFLICT_RETRIES:
                    raise
                log.warning("write conflict (another writer?); retrying batch, attempt %d",
                            attempt)
            except BaseException:
                self.forget(cells)
                raise

    def _look_up_evicted(self, parsed: Sequence[CommandBase | Outcome]) -> None:
        """In a cell that evicted, a name that misses in memory may be in the log: ask once
        for the whole batch which of them are, so each miss is not a read of its own."""
        world = self._world
        world.absent.clear()
        if self.existing is None:
            return
        wanted: set[UUID] = set()
        for command in parsed:
            state = world.parts.get(getattr(command, "cell", ""))
            if state is None or not state.evicted:
                continue
            name, account = getattr(command, "instance_id", None), getattr(command, "account", None)
            if isinstance(name, str) and isinstance(account, str) and (
                    command.cell, account, name) not in state.instances:  # type: ignore[union-attr]
                wanted.add(Instance.create_id(command.cell, account, name))  # type: ignore[union-attr]
            node_id = getattr(command, "node_id", None)
            if isinstance(node_id, str) and (command.cell, node_id) not in state.nodes:  # type: ignore[union-attr]
                wanted.add(Node.create_id(command.cell, node_id))  # type: ignore[union-attr]
        if wanted:
            world.absent.update(wanted - self.existing(wanted))

    def _record(self, events: list[Any], tracking: Tracking | None) -> Sequence[int]:
        """Store a batch with each event's link in its cell's hash chain (engine/chain.py);
        the cells' heads move on only once it is stored (a conflict reloads them)."""
        world = self._world
        cells = []
        for event in events:
            cell = world.cell_of.get(event.originator_id) or getattr(event, "cell", None)
            if cell is None:
                raise RuntimeError(f"no cell known for {event.originator_id}: cannot chain it")
            cells.append(cell)
        heads = {c: h for c in set(cells) if (h := world.parts[c].chain_head) is not None}
        ids, heads = self.app.record(events, tracking, cells, heads)
        for cell, head in heads.items():
            world.parts[cell].chain_head = head
        return ids

    def _recorded(self, events: list[Any], ids: Sequence[int]) -> None:
        """Note each cell's newest position (`ids`: where the batch's events were stored);
        snapshot the cells that are due."""
        if not ids:
            return
        newest = max(ids)
        counts: dict[str, int] = defaultdict(int)
        cell_of = self._world.cell_of
        for event in events:
            cell = cell_of.get(event.originator_id)
            if cell is not None:
                counts[cell] += 1
        for cell, count in counts.items():
            if cell in self.position:
                self.position[cell] = newest
                self.unsaved[cell] = self.unsaved.get(cell, 0) + count
        due = [c for c, n in self.unsaved.items() if n >= self.snapshot_every]
        if due:
            self.save_snapshots(due)

    def _decide(self, parsed_items: Sequence[CommandBase | Outcome], crashed: dict[int, Exception],
                role: Role | None) -> tuple[list[Outcome], list[Any]] | Crashed:
        world = self._world
        outcomes: list[Outcome] = []
        events: list[Any] = []
        handled: dict[str, list[dict[str, Any]]] = defaultdict(list)
        before = world.clocks  # each cell's clock before this batch
        clocks = dict(before)  # moved by this batch's accepted commands only
        vouched = world.vouched  # moved by this batch's accepted operator commands only
        # Each command's id as recorded before the batch: one look-up each (a miss hashes
        # the id and searches the id memory). Only an earlier command of this batch can
        # make a miss a hit by the time it is decided: `decided` holds those ids.
        known: dict[int, OutcomeKey | None] = {}
        decided: set[tuple[str, str, str]] = set()
        for i, p in enumerate(parsed_items):
            if isinstance(p, CommandBase) and (role is None or p.role == role):
                known[i] = world.recorded(p.cell, p.principal, p.command_id)
        # Batch placement: the batch's creates planned together (K = placement_window; 1 is
        # one by one). Each create is still decided in order; see engine/batch_plan.py.
        window = self.limits.placement_window
        hints = batch_plan.plan_batch(world, [
            (i, p) for i, p in enumerate(parsed_items)
            if i in known and i not in crashed and known[i] is None
            and _expired(p, before.get(p.cell), self.limits) is None  # type: ignore[arg-type]
        ] if window > 1 else [], window)
        for index, parsed in enumerate(parsed_items):
            if isinstance(parsed, Outcome):
                outcomes.append(parsed)
                continue
            command = parsed
            principal = command.principal
            if role is not None and command.role != role:
                # Not recorded: a command on the wrong topic must not squat its id.
                outcomes.append(_wrong_topic(command, role).model_copy(
                    update={"principal": principal}))
                continue
            digest = content_digest(command)
            once = (command.cell, principal, command.command_id)
            key = world.recorded(*once) if once in decided else known[index]
            if key is not None:
                outcomes.append(_repeat(world.part(command.cell), key, command, digest)
                                .model_copy(update={"principal": principal}))
                continue
            clock = clocks.get(command.cell)
            # Older than the window its id is remembered for, by the cell's clock at this
            # point of the batch (so the answer is the same at any batch size): never
            # decided, and recorded like any rejection, so that a replay of the recorded
            # batch plans with it exactly as the original did.
            expired = _expired(command, clock, self.limits)
            claimed = command.at
            recorded_before = len(events)
            if expired is None and command.role == "tenant" and clock is not None \
                    and claimed < clock:
                # No tenant acts in the past: a backdated stop must not cancel billed time.
                command = command.model_copy(update={"issued_at": clock})
            if expired is not None:
                outcome = Outcome.rejected(command.command_id, [expired], principal)
            elif index in crashed:
                outcome = Outcome.rejected(command.command_id, [Reason(
                    field="$", problem=f"internal error: {crashed[index]!r}")], principal)
            elif skew := _too_early(command, clock, vouched.get(command.cell), self.limits):
                outcome = Outcome.rejected(command.command_id, [skew], principal)
            else:
                armed = batch_plan.arm(world, hints.get(index))
                try:
                    outcome = self._handle(Draft(world, self.limits, clock), command, index,
                                           events, principal)
                finally:
                    batch_plan.disarm(armed)
                if isinstance(outcome, Crashed):
                    return outcome
            if command.at != claimed and outcome.status == "accepted":
                outcome = outcome.model_copy(update={"note": "; ".join(filter(None, [
                    outcome.note, f"takes effect at the cell's clock {command.at.isoformat()}, "
                                  "not at its earlier issued_at"]))})
            if moves_clock(command, outcome, clock, events[recorded_before:]):
                clocks[command.cell] = max(clock or command.at, command.at)
            if command.role == "operator" and outcome.status == "accepted":
                # What world.vouched_time reads back from the entry (UTC: it is quoted).
                held, at = vouched.get(command.cell), command.at.astimezone(UTC)
                vouched[command.cell] = at if held is None else max(held, at)
            outcomes.append(outcome)
            # The outcome's dump names its principal already, in the place it always had.
            entry = {**outcome.model_dump(mode="json", exclude_none=True),
                     "command_type": command.type, "digest": digest,
                     "command": kept_command(parsed)}
            world.remember(command.cell, entry)
            decided.add(once)
            handled[command.cell].append(entry)
        # A cell's log is stamped with its clock: a batch of rejections leaves it where it
        # was. A cell with no clock yet (nothing accepted) takes the earliest time there is:
        # never a time a command merely claimed, nor another cell's (cells stand alone).
        for cell, records in handled.items():
            at = clocks.get(cell, TIME_MIN)
            cell_log = world.cell_log(cell) or CellLog.create(at, cell=cell)
            cell_log.record(records, at)
            draft = Draft(world)
            draft.touch(cell_log, f"cell-log/{cell}")
            events.extend(draft.events)
        return outcomes, events

    @staticmethod
    def _handle(draft: Draft, command: CommandBase, index: int, events: list[Any],
                principal: str) -> Outcome | Crashed:
        try:
            decision = HANDLERS[type(command)](draft, command)
        except Exception as error:  # a bug: the batch's state is no longer to be trusted
            return Crashed(index, error)
        if isinstance(decision, Refused):
            if draft.events:
                return Crashed(index, RuntimeError("refused after recording events"))
            return Outcome.rejected(command.command_id,
                                    [Reason(**r) for r in decision.reasons], principal)
        events.extend(decision.events)
        return Outcome(command_id=command.command_id, principal=principal, status="accepted",
                       events=list(decision.event_ids), note=decision.note)


# Bookkeeping a report may record without anything having happened: a higher sequence, a run
# reported during a back-off. Neither is evidence that time passed.
NO_CHANGE = (Instance.Sequenced, Instance.RunHeld)


def moves_clock(command: CommandBase, outcome: Outcome, clock: datetime | None,
                recorded: Sequence[Any]) -> bool:
    """A tenant's time is only its claim: it may run ahead by the skew but never moves the
    clock. An agent's report moves it only when it changed something (a stale report is no
    evidence of time passing), an operator's accepted command always. So neither a tenant nor
    a stream of no-op reports can walk a cell's "now" forward for everyone else; reports that
    do change something stay within the skew of the operator's time (`_too_early`)."""
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


def _repeat(world: CellState, key: tuple[str, str], command: CommandBase, digest: str
            ) -> Outcome:
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


def _expired(command: CommandBase, clock: datetime | None, limits: EngineLimits
             ) -> Reason | None:
    """A command older than the command-id retention window (before the cell's clock) whose
    id is not remembered: its outcome may have been forgotten, so it is never decided again.
    (Ticks carry no id worth remembering: they are the clock.)"""
    if clock is None or isinstance(command, Tick):
        return None
    age = (clock - command.at).total_seconds()
    most = limits.command_id_retention_seconds
    if age <= most:
        return None
    field = {"issued_at", "occurred_at"} & type(command).model_fields.keys()
    return Reason(field=next(iter(field), "$"), code="command_id_expired",
                  problem=f"{age:.0f} s before the cell's clock ({clock.isoformat()}): command "
                          f"ids are remembered for {most} s, so a command this old is never "
                          "decided again; send it anew with a new command_id and a current time")


def _too_early(command: CommandBase, clock: datetime | None, vouched: datetime | None,
               limits: EngineLimits) -> Reason | None:
    """A command (other than a Tick, which has its own limits) may run ahead of its cell's
    clock by at most `max_skew_seconds` (`max_tenant_skew_seconds` for a tenant). An agent's
    report may also run at most `max_skew_seconds` ahead of the newest time an operator
    vouched for: reports move the clock, and node principals are not authenticated, so
    without this a stream of them could walk the clock a skew at a time (§5.4)."""
    if clock is None or isinstance(command, Tick):
        return None
    field = next(iter({"issued_at", "occurred_at"} & type(command).model_fields.keys()), "$")
    ahead = (command.at - clock).total_seconds()
    most = limits.max_tenant_skew_seconds if command.role == "tenant" else limits.max_skew_seconds
    if ahead > most:
        return Reason(field=field, code="clock_skew",
                      problem=f"{ahead:.0f} s ahead of the cell's clock ({clock.isoformat()}); "
                              f"at most {most} s")
    if command.role != "agent" or vouched is None:
        return None
    ahead = (command.at - vouched).total_seconds()
    if ahead <= most:
        return None
    return Reason(field=field, code="clock_unvouched",
                  problem=f"{ahead:.0f} s ahead of the newest time an operator vouched for "
                          f"({vouched.isoformat()}: a Tick or an operator's command); an "
                          f"agent's report may run at most {most} s ahead of it")


def _parse(item: Item) -> CommandBase | Outcome:
    if isinstance(item, CommandBase):
        return item
    try:
        return parse_command(item)  # type: ignore[return-value]
    except NotACommand as exc:
        return exc.outcome
